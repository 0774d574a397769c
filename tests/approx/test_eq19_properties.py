"""Property tests of eq. 19: the bit-serial conv of a quantized input equals the dense conv.

    plane_conv2d(x, staircase, w_bar, stride, pad) == conv2d_nchw(staircase.quantize(x), w_bar, stride, pad)

close to 1e-9 of the magnitude bound conv(|A_bar|, |W_bar|) in float64, and bit for bit when every scale,
level and input is dyadic (k/8, |k| < 64: every partial sum is exact in float64).
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from patvm.approx import (
    Staircase,
    approximate_weights_abc,
    approximate_weights_pa,
    conv2d_nchw,
    decompose_weights,
    pa_eq19_conv2d,
    plane_conv2d,
)
from patvm.approx.planes import onehot_activation_planes

SETTINGS = settings(max_examples=60, deadline=None)
SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def conv_geometry(draw):
    """(x shape, w shape, stride, pad) with the kernel fitting the padded input."""
    batch, C, H, W = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    pad = draw(st.integers(0, 2))
    K = draw(st.integers(1, min(5, H + 2 * pad, W + 2 * pad)))
    O = draw(st.integers(1, 4))
    return (batch, C, H, W), (O, C, K, K), draw(st.integers(1, 3)), pad


def staircase_tables(rng, N: int, bottom_zero: bool, C: int | None) -> Staircase:
    """PA (levels[0] = 0, increasing) or ABC (non-zero bottom) staircase; per channel when C is given."""
    steps = rng.uniform(0.05, 1.0, N + 1)
    levels = np.cumsum(steps) - (steps[0] if bottom_zero else rng.uniform(0.5, 3.0) * steps.sum())
    if bottom_zero:
        levels[0] = 0.0
    shape = (N,) if C is None else (C, N)
    thresholds = np.sort(rng.uniform(-1.5, 1.5, shape), axis=-1) + np.arange(N) * 1e-3
    levels = levels if C is None else np.tile(levels, (C, 1))
    return Staircase(thresholds.astype(np.float32), levels.astype(np.float32))


def inputs_hitting_thresholds(rng, shape, staircase: Staircase) -> np.ndarray:
    """Random inputs with about a quarter of them exactly on a threshold."""
    x = rng.uniform(-2.0, 2.0, shape).astype(np.float32)
    on = rng.random(shape) < 0.25
    table = staircase.thresholds if not staircase.per_channel else staircase.thresholds.max(axis=0)
    x[on] = rng.choice(table.ravel(), int(on.sum()))
    return x


def assert_eq19_close(x, staircase, w_bar, stride, pad):
    got = plane_conv2d(x, staircase, w_bar, stride, pad)
    qx = staircase.quantize(x)
    expect = conv2d_nchw(qx, w_bar, stride, pad)
    bound = conv2d_nchw(np.abs(qx), np.abs(w_bar), stride, pad)
    assert got.shape == expect.shape
    assert np.all(np.abs(got - expect) <= 1e-9 * bound + 1e-300)


def pa_or_abc_weights(rng, w_shape, family: str, M: int) -> np.ndarray:
    W = rng.standard_normal(w_shape).astype(np.float32)
    return (approximate_weights_pa(W, M) if family == "pa" else approximate_weights_abc(W, M)).w_bar


@SETTINGS
@given(geometry=conv_geometry(), M=st.sampled_from([2, 4, 6, 8]), N=st.integers(1, 7),
       pa_levels=st.booleans(), per_channel=st.booleans(), seed=SEEDS)
def test_plane_conv_equals_dense_conv_for_pa_weights(geometry, M, N, pa_levels, per_channel, seed):
    x_shape, w_shape, stride, pad = geometry
    rng = np.random.default_rng(seed)
    w_bar = pa_or_abc_weights(rng, w_shape, "pa", M)
    staircase = staircase_tables(rng, N, pa_levels, x_shape[1] if per_channel else None)
    assert_eq19_close(inputs_hitting_thresholds(rng, x_shape, staircase), staircase, w_bar, stride, pad)


@SETTINGS
@given(geometry=conv_geometry(), M=st.integers(1, 3), N=st.integers(1, 7),
       pa_levels=st.booleans(), per_channel=st.booleans(), seed=SEEDS)
def test_plane_conv_equals_dense_conv_for_abc_weights(geometry, M, N, pa_levels, per_channel, seed):
    x_shape, w_shape, stride, pad = geometry
    rng = np.random.default_rng(seed)
    w_bar = pa_or_abc_weights(rng, w_shape, "abc", M)
    assert decompose_weights(w_bar).count <= M
    staircase = staircase_tables(rng, N, pa_levels, x_shape[1] if per_channel else None)
    assert_eq19_close(inputs_hitting_thresholds(rng, x_shape, staircase), staircase, w_bar, stride, pad)


def dyadic(rng, shape, limit: int = 64) -> np.ndarray:
    return rng.integers(-limit + 1, limit, shape) / 8.0


def dyadic_staircase(rng, N: int, bottom_zero: bool, C: int | None) -> Staircase:
    grid = np.arange(-63, 64) / 8.0
    rows = 1 if C is None else C
    thresholds = np.stack([np.sort(rng.choice(grid, N, replace=False)) for _ in range(rows)])
    levels = dyadic(rng, N + 1)
    if bottom_zero:
        levels[0] = 0.0
    if C is None:
        return Staircase(thresholds[0].astype(np.float32), levels.astype(np.float32))
    return Staircase(thresholds.astype(np.float32), np.tile(levels, (C, 1)).astype(np.float32))


def dyadic_one_hot_weights(rng, w_shape, M: int) -> np.ndarray:
    """PA-like: 0 and M distinct non-zero dyadic values."""
    nonzero = rng.choice(np.setdiff1d(np.arange(-63, 64), [0]), M, replace=False) / 8.0
    return rng.choice(np.concatenate([[0.0], nonzero]), w_shape).astype(np.float32)


def dyadic_basis_weights(rng, w_shape, M: int) -> np.ndarray:
    """ABC-like: sum of M dyadic alphas times independent {-1,+1} bases (the basis decomposition)."""
    alphas = rng.integers(1, 32, M) / 8.0
    bases = rng.integers(0, 2, (M,) + tuple(w_shape)) * 2 - 1
    return np.tensordot(alphas, bases, axes=1).astype(np.float32)


@SETTINGS
@given(geometry=conv_geometry(), family=st.sampled_from(["pa", "abc"]), M=st.integers(1, 8), N=st.integers(1, 7),
       pa_levels=st.booleans(), per_channel=st.booleans(), seed=SEEDS)
def test_plane_conv_is_bit_exact_for_dyadic_values(geometry, family, M, N, pa_levels, per_channel, seed):
    x_shape, w_shape, stride, pad = geometry
    rng = np.random.default_rng(seed)
    w_bar = dyadic_one_hot_weights(rng, w_shape, M) if family == "pa" else dyadic_basis_weights(rng, w_shape, min(M, 3))
    staircase = dyadic_staircase(rng, N, pa_levels, x_shape[1] if per_channel else None)
    x = dyadic(rng, x_shape).astype(np.float32)
    got = plane_conv2d(x, staircase, w_bar, stride, pad)
    assert np.array_equal(got, conv2d_nchw(staircase.quantize(x), w_bar, stride, pad))


@SETTINGS
@given(geometry=conv_geometry(), M=st.sampled_from([2, 4, 6, 8]), N=st.integers(1, 7), seed=SEEDS)
def test_paper_eq19_with_one_hot_planes_equals_dense_conv(geometry, M, N, seed):
    x_shape, w_shape, stride, pad = geometry
    rng = np.random.default_rng(seed)
    pa = approximate_weights_pa(rng.standard_normal(w_shape).astype(np.float32), M)
    staircase = staircase_tables(rng, N, True, None)
    x = inputs_hitting_thresholds(rng, x_shape, staircase)
    v_planes = onehot_activation_planes(staircase, x)
    got = pa_eq19_conv2d(pa.planes, pa.alphas, v_planes, staircase.levels[1:], stride, pad)
    qx = staircase.quantize(x)
    expect = conv2d_nchw(qx, pa.w_bar, stride, pad)
    bound = conv2d_nchw(np.abs(qx), np.abs(pa.w_bar), stride, pad)
    assert np.all(np.abs(got - expect) <= 1e-9 * bound + 1e-300)


@SETTINGS
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
       N=st.integers(1, 7), seed=SEEDS)
def test_one_hot_planes_are_disjoint_and_sum_to_the_staircase(shape, N, seed):
    rng = np.random.default_rng(seed)
    staircase = staircase_tables(rng, N, True, None)
    x = inputs_hitting_thresholds(rng, shape, staircase)
    v = onehot_activation_planes(staircase, x)
    assert v.shape == (N,) + shape and v.sum(axis=0).max() <= 1
    y = np.tensordot(staircase.levels[1:].astype(np.float64), v.astype(np.float64), axes=1)
    assert np.array_equal(y, staircase.quantize(x).astype(np.float64))


def test_all_zero_weights_keep_the_batch():
    x = np.ones((2, 1, 1, 1), np.float32)
    staircase = Staircase(np.array([0.5], np.float32), np.array([0.0, 1.0], np.float32))
    w_bar = np.zeros((1, 1, 1, 1), np.float32)
    assert plane_conv2d(x, staircase, w_bar).shape == conv2d_nchw(staircase.quantize(x), w_bar).shape == (2, 1, 1, 1)
