"""Staircase activations: the semantics of ai.patvm.PAQuantize, validation, BatchNorm folding."""
import numpy as np
import pytest

from patvm.approx import Staircase, fold_batchnorm, staircase_quantize
from patvm.approx.staircase import validate_staircase
from patvm.errors import PatvmError

F32 = np.float32


def test_levels_selected_by_count_of_thresholds_at_or_below():
    s = Staircase([0.0, 1.0, 2.0], [0.0, 0.5, 1.5, 3.0])
    x = np.array([-1.0, 0.0, 0.5, 1.0, 1.9999999, 2.0, 100.0], F32)
    assert s.quantize(x, axis=0).tolist() == [0.0, 0.5, 0.5, 1.5, 1.5, 3.0, 3.0]


def test_nan_gives_bottom_level_and_infinities_the_ends():
    s = Staircase([-1.0, 1.0], [-2.0, 0.25, 4.0])
    x = np.array([np.nan, -np.inf, np.inf, -np.nan], F32)
    assert s.quantize(x, axis=0).tolist() == [-2.0, -2.0, 4.0, -2.0]


def test_output_is_bit_identical_to_a_level():
    rng = np.random.default_rng(0)
    levels = rng.standard_normal(6).astype(F32)
    s = Staircase(np.sort(rng.standard_normal(5)).astype(F32), levels)
    y = s.quantize(rng.standard_normal((2, 3, 4)).astype(F32))
    assert y.dtype == F32 and np.all(np.isin(y, levels))


def test_per_channel_thresholds_on_axis_1():
    s = Staircase([[0.0, 1.0], [10.0, 11.0]], [[0.0, 1.0, 2.0], [0.0, 5.0, 6.0]])
    x = np.array([[[0.5, 1.5], [10.5, 9.0]]], F32)  # [1, 2, 2]
    assert s.quantize(x).tolist() == [[[1.0, 2.0], [5.0, 0.0]]]


def test_per_channel_thresholds_refuse_wrong_channel_count():
    s = Staircase([[0.0], [1.0]], [[0.0, 1.0], [0.0, 1.0]])
    with pytest.raises(PatvmError, match="2 channels"):
        s.quantize(np.zeros((1, 3, 2), F32))


def test_thermometer_and_deltas_reconstruct_quantize():
    rng = np.random.default_rng(1)
    s = Staircase([-0.5, 0.0, 0.75], [-1.0, -0.25, 0.5, 2.0])
    x = rng.uniform(-2, 2, (2, 3, 4)).astype(F32)
    planes = s.thermometer_planes(x)
    y = s.levels[0] + np.tensordot(s.thermometer_deltas(), planes.astype(np.float64), axes=1)
    assert np.array_equal(y, s.quantize(x).astype(np.float64))


def one_line_refusal(thresholds, levels, match: str) -> None:
    with pytest.raises(PatvmError, match=match) as info:
        Staircase(thresholds, levels)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("thresholds", [[1.0, 1.0], [2.0, 1.0], [[0.0, 1.0], [1.0, 1.0]]])
def test_non_increasing_thresholds_are_refused(thresholds):
    levels = np.zeros(np.shape(thresholds)[:-1] + (np.shape(thresholds)[-1] + 1,))
    one_line_refusal(thresholds, levels, "strictly increasing")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_thresholds_are_refused(bad):
    one_line_refusal([0.0, bad], [0.0, 1.0, 2.0], "thresholds contain NaN or infinity")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_levels_are_refused(bad):
    one_line_refusal([0.0, 1.0], [0.0, bad, 2.0], "levels .* contain NaN or infinity")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_huge_float64_values_overflowing_float32_are_refused():
    one_line_refusal([0.0, 1e39], [0.0, 1.0, 2.0], "thresholds contain NaN or infinity")


@pytest.mark.parametrize("thresholds,levels", [
    ([0.0, 1.0], [0.0, 1.0]),
    ([0.0, 1.0], [0.0, 1.0, 2.0, 3.0]),
    ([[0.0, 1.0]], [0.0, 1.0, 2.0]),
    ([[0.0, 1.0], [0.0, 1.0]], [[0.0, 1.0, 2.0]]),
])
def test_wrong_level_lengths_are_refused(thresholds, levels):
    one_line_refusal(thresholds, levels, "levels must have shape")


@pytest.mark.parametrize("thresholds", [0.5, [], np.zeros((1, 1, 1)), np.zeros((2, 0))])
def test_wrong_threshold_shapes_are_refused(thresholds):
    one_line_refusal(thresholds, [0.0, 1.0], "thresholds must have shape")


def test_validate_staircase_names_where():
    with pytest.raises(PatvmError, match="^PAQuantize node 'q7': thresholds must be strictly increasing$"):
        validate_staircase(np.array([1.0, 0.0], F32), np.zeros(3, F32), where="PAQuantize node 'q7'")


def batchnorm(x, scale, bias, mean, var, eps):
    def r(a):
        return np.asarray(a, np.float64).reshape(1, -1, 1, 1)

    return r(scale) * (x.astype(np.float64) - r(mean)) / np.sqrt(r(var) + eps) + r(bias)


@pytest.mark.parametrize("seed", range(6))
def test_fold_batchnorm_equals_quantize_of_batchnorm(seed):
    rng = np.random.default_rng(seed)
    C = int(rng.integers(1, 8))
    scale, bias = rng.uniform(0.2, 3.0, C), rng.standard_normal(C)
    mean, var = rng.standard_normal(C), rng.uniform(0.1, 4.0, C)
    thresholds = np.sort(rng.choice(np.linspace(-2, 2, 41), 4, replace=False)).astype(F32)
    levels = np.array([0.0, 0.5, 1.0, 1.5, 2.5], F32)
    folded = fold_batchnorm(thresholds, levels, scale, bias, mean, var, eps=1e-3)
    assert folded.per_channel and folded.thresholds.shape == (C, 4) and folded.levels.shape == (C, 5)
    x = rng.standard_normal((3, C, 6, 6)).astype(F32) * 2
    bn = batchnorm(x, scale, bias, mean, var, 1e-3)
    near = np.min(np.abs(bn[..., None] - thresholds.astype(np.float64)), axis=-1) < 1e-4
    expect = staircase_quantize(bn, thresholds, levels)
    got = folded.quantize(x)
    assert np.array_equal(got[~near], expect[~near])


def test_fold_batchnorm_refuses_non_positive_scale():
    with pytest.raises(PatvmError, match="non-positive scale"):
        fold_batchnorm(np.array([0.0], F32), np.array([0.0, 1.0], F32), [1.0, -1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(PatvmError, match="non-positive scale"):
        fold_batchnorm(np.array([0.0], F32), np.array([0.0, 1.0], F32), [0.0], [0.0], [0.0], [1.0])
