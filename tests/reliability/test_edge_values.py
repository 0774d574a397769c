"""Edge values through compiled binary layers: the compiled output equals onnxruntime's, NaN positions included.

Inputs exactly at thresholds (and one ulp either side), +-inf, NaN (gives levels[0]), +-0, very large and
denormal values, denormal thresholds; weights all equal, all zero, a single non-zero; ABC-Net levels
without 0 (the zero-padding correction). Every model is compiled once and run on every input family.
"""
from functools import cache

import numpy as np
import pytest

import patvm
from patvm.approx import Staircase, abc_activation_staircase, conv2d_nchw
from patvm.onnx_format import GraphWriter
from patvm.testing import onnxruntime_outputs

F32 = np.float32
PA_THRESHOLDS = np.array([-0.5, 0.0, 0.5, 1.0], F32)
PA_LEVELS = np.array([0.0, 0.25, 0.5, 1.0, 2.0], F32)
PA_WEIGHT_VALUES = np.array([-0.75, -0.25, 0.0, 0.5, 1.0], F32)
ABC_THRESHOLDS, ABC_LEVELS = abc_activation_staircase([0.25, -0.125, 0.375], [0.5, 0.25, 0.125])
DENORMAL_THRESHOLDS = np.array([-1e-40, 0.0, 1e-45, 1e-39], F32)
HUGE = np.finfo(F32).max
SHAPE = (2, 5, 5, 5)


def per_channel(stair: Staircase, channels: int, bottom: bool) -> Staircase:
    shift = (np.arange(channels) % 3 - 1).reshape(-1, 1) / 4
    lv = np.repeat(stair.levels[None], channels, 0) + (shift if bottom else 0)
    return Staircase((stair.thresholds[None] + shift).astype(F32), lv.astype(F32))


def staircases() -> dict[str, Staircase]:
    pa = Staircase(PA_THRESHOLDS, PA_LEVELS)
    abc = Staircase(ABC_THRESHOLDS, ABC_LEVELS)
    return {
        "pa": pa,
        "pa-per-channel": per_channel(pa, SHAPE[1], bottom=False),
        "abc-no-zero-level": abc,                                   # levels -0.875 .. 0.875, 0 absent
        "abc-per-channel-bottom": per_channel(abc, SHAPE[1], bottom=True),
        "denormal-thresholds": Staircase(DENORMAL_THRESHOLDS, PA_LEVELS),
        "extreme-thresholds": Staircase(np.array([-HUGE, 0.0, HUGE], F32), np.array([-1, 0, 0.5, 1], F32)),
        "sign": Staircase(np.array([0.0], F32), np.array([-1.0, 1.0], F32)),
    }


STAIRS = staircases()


def weights(kind: str, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "pa":
        return rng.choice(PA_WEIGHT_VALUES, size=shape).astype(F32)
    if kind == "abc":
        return rng.choice(np.array([-0.5, 0.5], F32), size=shape)
    if kind == "all-equal":
        return np.full(shape, 0.375, F32)
    if kind == "all-zero":
        return np.zeros(shape, F32)
    w = np.zeros(shape, F32)          # single non-zero
    w[shape[0] // 2, shape[1] // 2, -1, 0] = -1.25
    return w


@cache
def conv_model(stair: str, weight: str = "pa", k: int = 3, stride: int = 1, pad: int = 1, strategy: str = "bit-serial",
               quantized: bool = True, channels: int = SHAPE[1]):
    """x -> PAQuantize -> Conv(W_bar) + bias; returns (model, compiled, weight)."""
    g = GraphWriter("edge")
    shape = (SHAPE[0], channels) + SHAPE[2:]
    x = g.input("x", list(shape))
    q = g.pa_quantize(x, STAIRS[stair] if channels == SHAPE[1] else per_channel(STAIRS[stair], channels, True)) \
        if quantized else x
    w = weights(weight, (4, channels, k, k))
    g.output(g.conv(q, w, np.array([0.5, -0.25, 0, 1], F32), stride=stride, pad=pad))
    model = g.model()
    compiled = patvm.compile(model, target="host", strategy=strategy)
    return model, compiled, w


@cache
def dense_model(stair: str):
    g = GraphWriter("edge-dense")
    feats = int(np.prod(SHAPE[1:]))
    x = g.input("x", [SHAPE[0], feats])
    stair_obj = STAIRS[stair]
    if stair_obj.per_channel:
        stair_obj = Staircase(np.resize(stair_obj.thresholds, (feats, stair_obj.N)),
                              np.resize(stair_obj.levels, (feats, stair_obj.N + 1)))
    q = g.pa_quantize(x, stair_obj)
    g.output(g.gemm(q, weights("pa", (6, feats), seed=1), np.arange(6, dtype=F32) / 4))
    model = g.model()
    return model, patvm.compile(model, target="host", strategy="bit-serial")


def input_family(name: str, stair: Staircase, shape=SHAPE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    thr = stair.thresholds.ravel()
    with np.errstate(over="ignore"):
        at = np.unique(np.concatenate([thr, np.nextafter(thr, -np.inf), np.nextafter(thr, np.inf)])).astype(F32)
    families = {
        "at-thresholds": at,
        "inf-nan-zero": np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 0.25, -0.75], F32),
        "huge": np.array([HUGE, -HUGE, 1e30, -1e30, 3e38, -3e38, 0.5], F32),
        "denormal": np.array([1e-45, -1e-45, 1e-40, -1e-40, 1e-39, -1e-39, 0.0, -0.0], F32),
        "everything": np.concatenate([at, [np.inf, -np.inf, np.nan, HUGE, -HUGE, 1e-45, -1e-40, -0.0]]).astype(F32),
    }
    x = rng.choice(families[name], size=shape).astype(F32)
    if stair.per_channel and name == "at-thresholds":     # each channel at its own thresholds
        for c in range(shape[1]):
            t = stair.thresholds[c]
            pool = np.concatenate([t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)]).astype(F32)
            x[:, c] = rng.choice(pool, size=x[:, c].shape)
    return x


FAMILIES = ["at-thresholds", "inf-nan-zero", "huge", "denormal", "everything"]


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN positions differ"
    assert np.array_equal(got, want, equal_nan=True), \
        f"{int((got != want).sum())} elements differ, max |diff| {np.nanmax(np.abs(got - want))}"


def reference_conv(x, stair: Staircase, w, bias, stride, pad) -> np.ndarray:
    """numpy: staircase (NaN -> levels[0]) then a float64 conv; exact for these dyadic tables."""
    q = stair.quantize(x)
    return (conv2d_nchw(q, w, stride, pad) + bias.reshape(1, -1, 1, 1)).astype(F32)


@pytest.mark.parametrize("stair", sorted(STAIRS))
def test_binary_conv_on_edge_inputs(stair):
    model, compiled, w = conv_model(stair)
    assert compiled.layers[0]["strategy"] == "bit-serial", compiled.report()
    for family in FAMILIES:
        x = input_family(family, STAIRS[stair])
        got = compiled.run(x)[0]
        want = onnxruntime_outputs(model, {"x": x})[0]
        assert_same(got, want)
        assert np.all(np.isfinite(got)), f"{family}: a quantized layer must give finite outputs"
        assert np.array_equal(got, reference_conv(x, STAIRS[stair], w, np.array([0.5, -0.25, 0, 1]), 1, 1)), family


@pytest.mark.parametrize("stair", ["pa", "abc-no-zero-level", "pa-per-channel"])
def test_nan_gives_the_bottom_level(stair):
    """An all-NaN image quantizes like an all -inf one (levels[0] everywhere)."""
    model, compiled, w = conv_model(stair)
    nan = np.full(SHAPE, np.nan, F32)
    got = compiled.run(nan)[0]
    assert_same(got, onnxruntime_outputs(model, {"x": nan})[0])
    assert_same(got, compiled.run(np.full(SHAPE, -np.inf, F32))[0])
    assert_same(got, reference_conv(nan, STAIRS[stair], w, np.array([0.5, -0.25, 0, 1]), 1, 1))


@pytest.mark.parametrize("stride,pad,k", [(2, 2, 3), (1, 0, 1), (3, 2, 5)])
def test_abc_without_zero_level_border(stride, pad, k):
    """0 is not a level: zero padding differs from the bottom level, at every stride / pad / kernel."""
    stair = STAIRS["abc-no-zero-level"]
    assert 0.0 not in stair.levels
    model, compiled, w = conv_model("abc-no-zero-level", "abc", k=k, stride=stride, pad=pad)
    assert compiled.layers[0]["strategy"] == "bit-serial"
    for family in ("everything", "at-thresholds"):
        x = input_family(family, stair, seed=stride)
        assert_same(compiled.run(x)[0], onnxruntime_outputs(model, {"x": x})[0])


@pytest.mark.parametrize("weight", ["all-equal", "all-zero", "single"])
@pytest.mark.parametrize("stair", ["pa", "abc-no-zero-level"])
def test_degenerate_weights(weight, stair):
    model, compiled, w = conv_model(stair, weight)
    assert compiled.layers[0]["strategy"] == "bit-serial", compiled.report()
    for family in ("everything", "at-thresholds"):
        x = input_family(family, STAIRS[stair], seed=3)
        got = compiled.run(x)[0]
        assert_same(got, onnxruntime_outputs(model, {"x": x})[0])
    if weight == "all-zero":
        assert np.array_equal(got, np.broadcast_to(np.array([0.5, -0.25, 0, 1], F32).reshape(1, 4, 1, 1), got.shape))


def test_dequantized_fp32_strategy_on_edge_inputs():
    """The fp32 strategy computes the quantizer with the canonical chain: NaN must still give levels[0]."""
    model, compiled, _ = conv_model("abc-per-channel-bottom", strategy="fp32")
    assert compiled.layers[0]["strategy"] == "fp32"
    for family in FAMILIES:
        x = input_family(family, STAIRS["abc-per-channel-bottom"], seed=5)
        assert_same(compiled.run(x)[0], onnxruntime_outputs(model, {"x": x})[0])


def test_channels_past_one_word():
    """70 channels: the second 64-bit word is partly padding; specials in the last channels."""
    model, compiled, _ = conv_model("pa", channels=70)
    assert compiled.layers[0]["strategy"] == "bit-serial"
    stair = per_channel(STAIRS["pa"], 70, True)
    for family in ("everything", "at-thresholds"):
        x = input_family(family, stair, shape=(SHAPE[0], 70) + SHAPE[2:], seed=7)
        assert_same(compiled.run(x)[0], onnxruntime_outputs(model, {"x": x})[0])


@pytest.mark.parametrize("stair", ["pa", "pa-per-channel", "abc-no-zero-level"])
def test_binary_dense_on_edge_inputs(stair):
    model, compiled = dense_model(stair)
    assert compiled.layers[0]["strategy"] == "bit-serial", compiled.report()
    feats = int(np.prod(SHAPE[1:]))
    for family in FAMILIES:
        x = input_family(family, STAIRS["pa"], shape=(SHAPE[0], feats), seed=11)
        assert_same(compiled.run(x)[0], onnxruntime_outputs(model, {"x": x})[0])


def test_unquantized_conv_propagates_nan_and_inf_like_onnxruntime():
    """An fp32 conv on raw input: NaN and inf propagate (inf * 0 = NaN, inf - inf = NaN) identically."""
    model, compiled, _ = conv_model("pa", quantized=False)
    rng = np.random.default_rng(13)
    x = rng.choice(np.array([0.5, -0.25, 1.0, -1.0, 0.0], F32), size=SHAPE)
    x.flat[rng.choice(x.size, 12, replace=False)] = rng.choice(np.array([np.nan, np.inf, -np.inf], F32), 12)
    got = compiled.run(x)[0]
    want = onnxruntime_outputs(model, {"x": x})[0]
    assert np.isnan(want).any() and np.isinf(want).any() and np.isfinite(want).any()
    assert_same(got, want)
