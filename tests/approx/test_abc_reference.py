"""ABC-Net reference (eq. 1-5 weights, eq. 8-9 activations)."""
import numpy as np
import pytest

from patvm.approx import (
    Staircase,
    abc_activation,
    abc_activation_staircase,
    approximate_weights_abc,
    decompose_weights,
)
from patvm.errors import PatvmError


def weights(seed: int, shape=(8, 4, 3, 3)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("M", [1, 2, 3, 5])
def test_bases_are_plus_minus_one(M):
    abc = approximate_weights_abc(weights(M), M)
    assert abc.bases.shape == (M, 8, 4, 3, 3) and abc.bases.dtype == np.int8
    assert set(np.unique(abc.bases).tolist()) <= {-1, 1}


@pytest.mark.parametrize("M", [1, 2, 3])
def test_bases_are_signs_of_shifted_centred_weights(M):
    W = weights(10 + M)
    abc = approximate_weights_abc(W, M)
    w64 = W.astype(np.float64)
    u = np.zeros(1) if M == 1 else np.linspace(-1, 1, M)
    for base, ui in zip(abc.bases, u):
        assert np.array_equal(base, np.where(w64 - w64.mean() + ui * w64.std() >= 0, 1, -1))


@pytest.mark.parametrize("M", [1, 2, 3, 4])
def test_alphas_are_least_squares_optimal(M):
    W = weights(20 + M)
    abc = approximate_weights_abc(W, M)
    B = abc.bases.reshape(M, -1).T.astype(np.float64)
    best, *_ = np.linalg.lstsq(B, W.astype(np.float64).ravel(), rcond=None)
    np.testing.assert_allclose(abc.alphas, best, rtol=1e-4, atol=1e-6)
    residual = np.sum((B @ abc.alphas.astype(np.float64) - W.ravel()) ** 2)
    optimum = np.sum((B @ best - W.ravel()) ** 2)
    assert residual <= optimum * (1 + 1e-6) + 1e-9


@pytest.mark.parametrize("M", [1, 2, 3])
def test_w_bar_is_the_weighted_sum_of_bases(M):
    abc = approximate_weights_abc(weights(30 + M), M)
    np.testing.assert_allclose(abc.w_bar, np.tensordot(abc.alphas.astype(np.float64), abc.bases, axes=1), rtol=1e-6)


@pytest.mark.parametrize("M", [1, 2, 3])
def test_decompose_weights_gives_at_most_m_planes_for_abc(M):
    abc = approximate_weights_abc(weights(40 + M), M)
    wp = decompose_weights(abc.w_bar)
    assert 1 <= wp.count <= M
    np.testing.assert_allclose(wp.reconstruct(), abc.w_bar, rtol=0, atol=1e-6)


@pytest.mark.parametrize("M", [0, -1, 2.5])
def test_bad_m_is_refused(M):
    with pytest.raises(PatvmError, match="M >= 1"):
        approximate_weights_abc(weights(0), M)


def test_non_finite_weights_are_refused():
    with pytest.raises(PatvmError, match="finite"):
        approximate_weights_abc(np.array([1.0, np.nan]), 2)


def random_abc_activation(rng, n: int):
    shifts = rng.uniform(-1.5, 1.5, n)
    betas = rng.uniform(0.1, 2.0, n)
    return shifts, betas


@pytest.mark.parametrize("seed", range(8))
def test_activation_staircase_equals_direct_activation(seed):
    rng = np.random.default_rng(seed)
    shifts, betas = random_abc_activation(rng, int(rng.integers(1, 6)))
    thresholds, levels = abc_activation_staircase(shifts, betas)
    staircase = Staircase(thresholds, levels)
    x = rng.uniform(-3, 3, 5000)
    near = np.min(np.abs(x[:, None] - (0.5 - shifts)[None, :]), axis=1) < 1e-5
    x = x[~near]   # float32 rounding of thresholds is allowed to move a boundary by an ulp
    np.testing.assert_allclose(staircase.quantize(x, axis=0), abc_activation(x, shifts, betas), rtol=1e-6, atol=1e-6)


def test_activation_staircase_has_non_zero_bottom_level():
    thresholds, levels = abc_activation_staircase(np.array([-0.5, 0.0, 0.5]), np.array([1.0, 2.0, 4.0]))
    assert thresholds.tolist() == [0.0, 0.5, 1.0]
    assert levels.tolist() == [-7.0, 1.0, 5.0, 7.0]  # beta 4 at 0.0, 2 at 0.5, 1 at 1.0


def test_activation_staircase_merges_equal_thresholds():
    thresholds, levels = abc_activation_staircase(np.array([0.25, 0.25, -0.5]), np.array([1.0, 2.0, 0.5]))
    assert thresholds.tolist() == [0.25, 1.0]
    assert levels.tolist() == [-3.5, 2.5, 3.5]
    x = np.array([-1.0, 0.25, 0.5, 1.0, 2.0])
    assert np.array_equal(
        Staircase(thresholds, levels).quantize(x, axis=0), abc_activation(x, [0.25, 0.25, -0.5], [1, 2, 0.5])
    )


def test_activation_staircase_refuses_mismatched_betas():
    with pytest.raises(PatvmError, match="one beta per shift"):
        abc_activation_staircase(np.array([0.0, 1.0]), np.array([1.0]))
