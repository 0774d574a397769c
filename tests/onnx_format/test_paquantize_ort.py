"""ai.patvm.PAQuantize run by onnxruntime through its model-local function == Staircase.quantize, bit for bit."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from patvm.approx import Staircase, abc_activation_staircase, pa_activation_levels
from patvm.onnx_format import DOMAIN, OP_TYPE, GraphWriter

F32 = np.float32
TINY = np.finfo(F32).tiny                  # smallest normal
DENORMAL = np.float32(1e-45)               # smallest denormal
HUGE = np.finfo(F32).max


def quantizer_model(shape, staircase: Staircase) -> onnx.ModelProto:
    g = GraphWriter("quantizer")
    x = g.input("x", list(shape))
    g.output(g.pa_quantize(x, staircase), list(shape))
    return g.model()


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def hostile_values(staircase: Staircase) -> np.ndarray:
    """Every threshold, its float32 neighbours, infinities, NaNs, huge, denormal and signed zero values."""
    t = staircase.thresholds.ravel()
    special = [np.nan, -np.nan, np.inf, -np.inf, HUGE, -HUGE, TINY, -TINY, DENORMAL, -DENORMAL, 0.0, -0.0, 1e30, -1e30]
    near = np.concatenate([t, np.nextafter(t, F32(np.inf)), np.nextafter(t, F32(-np.inf))])
    return np.concatenate([np.asarray(special, F32), near.astype(F32)])


def fill(shape, staircase: Staircase, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, shape).astype(F32)
    flat = x.reshape(-1)
    values = hostile_values(staircase)
    picks = rng.choice(flat.size, min(flat.size, 4 * values.size), replace=flat.size < 4 * values.size)
    flat[picks] = rng.choice(values, picks.size)
    return x


def pa_staircase(C: int | None) -> Staircase:
    thresholds = np.array([0.0, 0.5, 1.25, 2.0], F32)
    levels = pa_activation_levels(np.array([0.3, 0.7, 1.4, 2.5], F32))
    if C is None:
        return Staircase(thresholds, levels)
    shift = np.linspace(-1, 1, C, dtype=F32)[:, None]
    return Staircase(thresholds[None, :] + shift, np.tile(levels, (C, 1)) * (1 + np.arange(C, dtype=F32)[:, None]))


def abc_staircase(C: int | None) -> Staircase:
    thresholds, levels = abc_activation_staircase(np.array([-0.4, 0.1, 0.45]), np.array([0.3, 0.9, 1.7]))
    if C is None:
        return Staircase(thresholds, levels)
    shift = np.linspace(-0.5, 0.5, C, dtype=F32)[:, None]
    return Staircase(thresholds[None, :] + shift, np.tile(levels, (C, 1)))


def denormal_staircase(C: int | None) -> Staircase:
    thresholds = np.array([-DENORMAL, 0.0, DENORMAL, TINY], F32)
    levels = np.array([-1.0, DENORMAL, 2.0, HUGE, 5.0], F32)
    if C is None:
        return Staircase(thresholds, levels)
    return Staircase(np.tile(thresholds, (C, 1)), np.tile(levels, (C, 1)))


SHAPES = [(3, 5), (2, 3, 4, 5), (1, 1, 7, 7)]
FAMILIES = [pa_staircase, abc_staircase, denormal_staircase]


@pytest.mark.parametrize("shape", SHAPES, ids=["rank2", "rank4", "rank4-c1"])
@pytest.mark.parametrize("family", FAMILIES, ids=["pa", "abc", "denormal"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor", "channel"])
def test_onnxruntime_matches_reference_bit_for_bit(shape, family, per_channel):
    staircase = family(shape[1] if per_channel else None)
    model = quantizer_model(shape, staircase)
    x = fill(shape, staircase, seed=len(shape) * 10 + shape[1])
    got = run_ort(model, x)
    expect = staircase.quantize(x)
    assert got.dtype == F32 and got.shape == x.shape
    assert np.array_equal(got.view(np.uint32), expect.view(np.uint32))


@pytest.mark.parametrize("per_channel", [False, True])
def test_nan_gives_the_bottom_level(per_channel):
    staircase = abc_staircase(3 if per_channel else None)
    x = np.full((2, 3), np.nan, F32)
    got = run_ort(quantizer_model(x.shape, staircase), x)
    bottom = staircase.levels[..., 0]
    assert np.array_equal(got, np.broadcast_to(bottom, (2, 3)))


def test_exactly_on_thresholds_gives_the_upper_level():
    staircase = pa_staircase(None)
    x = np.tile(staircase.thresholds, (2, 1))
    got = run_ort(quantizer_model(x.shape, staircase), x)
    assert np.array_equal(got, np.tile(staircase.levels[1:], (2, 1)))


@pytest.mark.parametrize("family", FAMILIES, ids=["pa", "abc", "denormal"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor", "channel"])
def test_quantizer_model_passes_the_full_checker(family, per_channel):
    model = quantizer_model((2, 3, 4, 4), family(3 if per_channel else None))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node if n.domain == DOMAIN] == [OP_TYPE]
    assert any(o.domain == DOMAIN and o.version == 1 for o in model.opset_import)
    assert any(f.domain == DOMAIN and f.name == OP_TYPE for f in model.functions)


def test_quantizer_model_survives_serialization():
    staircase = abc_staircase(3)
    model = onnx.load_from_string(quantizer_model((2, 3, 4, 4), staircase).SerializeToString())
    onnx.checker.check_model(model, full_check=True)
    x = fill((2, 3, 4, 4), staircase, seed=5)
    assert np.array_equal(run_ort(model, x), staircase.quantize(x))
