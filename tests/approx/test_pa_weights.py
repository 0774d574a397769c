"""PA weight approximation (paper eq. 6-7, Table 1) and its plane decomposition (eq. 15-16)."""
import numpy as np
import pytest

from patvm.approx import approximate_weights_pa, decompose_weights, pa_endpoint_coefficients
from patvm.approx.pa import TABLE1_M8, pa_activation_levels
from patvm.errors import PatvmError

TABLE1 = [-1.5, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 1.5]


def gaussian_weights(seed: int, shape=(16, 8, 3, 3)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.1 + 0.01


def test_endpoints_for_m8_are_table1():
    assert pa_endpoint_coefficients(8).tolist() == TABLE1
    assert list(TABLE1_M8) == TABLE1


@pytest.mark.parametrize("M", [2, 4, 6, 8, 10, 16])
def test_endpoints_are_symmetric_increasing_with_zero_piece_quarter_std(M):
    c = pa_endpoint_coefficients(M)
    assert c.shape == (M,)
    assert np.all(np.diff(c) > 0)
    assert np.array_equal(c, -c[::-1])
    assert c[M // 2 - 1] == -0.25 and c[M // 2] == 0.25


@pytest.mark.parametrize("M", [-2, 0, 1, 3, 5, 7, 2.0, "8", None, True])
def test_odd_or_small_or_non_integer_m_is_refused(M):
    with pytest.raises(PatvmError, match="even number of weight pieces"):
        pa_endpoint_coefficients(M)
    with pytest.raises(PatvmError):
        approximate_weights_pa(gaussian_weights(0), M)


@pytest.mark.parametrize("W", [np.zeros((0, 3)), np.array([1.0, np.nan]), np.array([np.inf, 0.0])])
def test_empty_or_non_finite_weights_are_refused(W):
    with pytest.raises(PatvmError, match="non-empty finite"):
        approximate_weights_pa(W, 4)


@pytest.mark.parametrize("M", [2, 4, 6, 8])
def test_middle_piece_is_exactly_zero(M):
    W = gaussian_weights(M)
    pa = approximate_weights_pa(W, M)
    w64 = W.astype(np.float64)
    in_middle = (w64 >= pa.endpoints[M // 2 - 1]) & (w64 < pa.endpoints[M // 2])
    assert in_middle.any()
    assert np.all(pa.w_bar[in_middle] == 0.0)
    assert not np.any(pa.planes[:, in_middle])


@pytest.mark.parametrize("M", [2, 4, 6, 8])
def test_endpoints_are_mean_plus_coefficients_times_std(M):
    W = gaussian_weights(10 + M)
    pa = approximate_weights_pa(W, M)
    w64 = W.astype(np.float64)
    np.testing.assert_allclose(pa.endpoints, w64.mean() + pa_endpoint_coefficients(M) * w64.std(), rtol=1e-12)


@pytest.mark.parametrize("M", [2, 4, 6, 8])
def test_scales_are_means_of_their_pieces(M):
    W = gaussian_weights(20 + M)
    pa = approximate_weights_pa(W, M)
    for plane, alpha in zip(pa.planes, pa.alphas):
        assert plane.any()
        assert alpha == np.float32(W.astype(np.float64)[plane].mean())
        assert np.all(pa.w_bar[plane] == alpha)


@pytest.mark.parametrize("M", [2, 4, 6, 8])
def test_pieces_follow_the_endpoints(M):
    W = gaussian_weights(30 + M)
    pa = approximate_weights_pa(W, M)
    bounds = np.concatenate([[-np.inf], pa.endpoints, [np.inf]])
    pieces = [p for p in range(M + 1) if p != M // 2]
    w64 = W.astype(np.float64)
    for plane, p in zip(pa.planes, pieces):
        assert np.array_equal(plane, (w64 >= bounds[p]) & (w64 < bounds[p + 1]))


@pytest.mark.parametrize("M", [2, 4, 6, 8])
def test_planes_are_disjoint_count_m_and_reconstruct_w_bar(M):
    W = gaussian_weights(40 + M)
    pa = approximate_weights_pa(W, M)
    assert pa.M == M and pa.planes.shape == (M,) + W.shape and pa.planes.dtype == bool
    assert pa.planes.sum(axis=0).max() <= 1
    assert np.array_equal(np.tensordot(pa.alphas, pa.planes.astype(np.float32), axes=1), pa.w_bar)
    assert pa.w_bar.dtype == np.float32 and pa.w_bar.shape == W.shape


@pytest.mark.parametrize("M", [2, 4, 6, 8])
def test_scales_are_increasing_with_the_pieces(M):
    pa = approximate_weights_pa(gaussian_weights(50 + M), M)
    assert np.all(np.diff(pa.alphas) > 0)
    assert np.all(pa.alphas[: M // 2] < 0) and np.all(pa.alphas[M // 2:] > 0)


def test_constant_weights_do_not_divide_by_zero():
    pa = approximate_weights_pa(np.full((2, 2), 0.5, np.float32), 4)
    assert np.all(np.isfinite(pa.alphas)) and np.all(np.isfinite(pa.w_bar))


def test_empty_pieces_keep_finite_scales():
    W = np.array([-1.0, 0.0, 1.0], np.float32)  # 2 of the 8 pieces occupied
    pa = approximate_weights_pa(W, 8)
    assert np.all(np.isfinite(pa.alphas))
    assert np.all(np.diff(pa.alphas) > 0)


@pytest.mark.parametrize("M", [2, 4, 6, 8])
def test_decompose_weights_gives_m_planes_for_pa(M):
    pa = approximate_weights_pa(gaussian_weights(60 + M), M)
    wp = decompose_weights(pa.w_bar)
    assert wp.count == M and wp.offset == 0.0 and wp.kind == "one-hot"
    assert np.array_equal(wp.reconstruct(), pa.w_bar.astype(np.float64))
    assert wp.planes.sum(axis=0).max() <= 1


def test_activation_levels_prepend_zero():
    assert pa_activation_levels(np.array([0.5, 1.0], np.float32)).tolist() == [0.0, 0.5, 1.0]
    per_channel = pa_activation_levels(np.ones((3, 2), np.float32))
    assert per_channel.shape == (3, 3) and np.all(per_channel[:, 0] == 0)
