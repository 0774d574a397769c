"""`decompose_weights`: the fewest {0,1} planes reproducing a few-valued weight tensor."""
import numpy as np
import pytest

from patvm.approx import decompose_weights
from patvm.approx.planes import MAX_WEIGHT_VALUES
from patvm.errors import PatvmError


def tensor_of_values(values, shape=(4, 3, 3, 3), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.asarray(values, np.float32)
    idx = np.concatenate([np.arange(len(values)), rng.integers(0, len(values), int(np.prod(shape)) - len(values))])
    return values[rng.permutation(idx)].reshape(shape)


def test_refuses_more_than_16_distinct_values():
    w = tensor_of_values(np.arange(17) / 8.0)
    with pytest.raises(PatvmError, match="17 distinct values, more than the 16") as info:
        decompose_weights(w)
    assert "\n" not in str(info.value)


def test_accepts_exactly_16_distinct_values():
    wp = decompose_weights(tensor_of_values(np.arange(16) / 8.0))
    assert wp.count <= MAX_WEIGHT_VALUES - 1


def test_one_hot_uses_zero_as_offset():
    w = tensor_of_values([-0.5, 0.0, 0.25, 1.0])
    wp = decompose_weights(w)
    assert wp.offset == 0.0 and wp.count == 3 and wp.kind == "one-hot"
    assert np.array_equal(wp.reconstruct(), w.astype(np.float64))


def test_without_zero_the_most_frequent_value_is_the_offset():
    w = np.array([0.5, 0.5, 0.5, -0.75], np.float32)
    wp = decompose_weights(w)
    assert wp.offset == 0.5 and wp.count == 1 and np.array_equal(wp.reconstruct(), w)


def test_plus_minus_one_bases_give_one_plane_each():
    rng = np.random.default_rng(3)
    bases = rng.integers(0, 2, (3, 5, 4, 3, 3)) * 2 - 1
    alphas = np.array([0.5, 0.25, 0.125])  # dyadic: the float32 sums are exact
    w = np.tensordot(alphas, bases, axes=1).astype(np.float32)
    wp = decompose_weights(w)
    assert wp.kind == "basis" and wp.count == 3
    assert np.array_equal(wp.reconstruct(), w.astype(np.float64))


def test_constant_tensor_needs_no_plane():
    wp = decompose_weights(np.full((2, 2), 0.75, np.float32))
    assert wp.count == 0 and np.array_equal(wp.reconstruct(), np.full((2, 2), 0.75))


def test_basis_decomposition_is_exact_for_non_dyadic_values():
    w = np.array([0.1, 0.2, 0.3, 0.4], np.float32)  # 0.1 + {0, 0.1} + {0, 0.2}: the basis form wins
    wp = decompose_weights(w)
    assert np.array_equal(wp.reconstruct(), w.astype(np.float64))
