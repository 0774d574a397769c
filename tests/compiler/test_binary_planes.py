"""Evenly spaced levels and weight values take ceil(log2(L)) binary planes with power-of-two scales, not
L-1 thermometer / one-hot planes (patvm.approx.Staircase.binary_planes, decompose_weights "binary"),
and the bit-serial result stays exact: bit for bit against onnxruntime with dyadic values."""
import numpy as np
import pytest
from conftest import dyadic, onnxruntime_run

import patvm
from patvm.approx import Staircase
from patvm.onnx_format import GraphWriter

# (activation levels, weight values, per-channel, (activation planes N, weight planes M)): 2-, 3- and 4-bit
# unsigned activations; narrow-range 3-bit weights (binary: 3 planes + the offset's, not 6), 2-bit weights
# (one-hot and binary cost the same), {-1,+1} weights, per-channel thresholds with a non-zero bottom level
CASES = {
    "a2 w3": (4, np.array([-3, -2, -1, 0, 1, 2, 3]) / 8, False, (2, 3)),
    "a3 w2": (8, np.array([-2, -1, 0, 1]) / 4, False, (3, 3)),   # one-hot 3 = binary 2 + the offset's plane
    "a4 w1": (16, np.array([-1, 1]) / 2, False, (4, 1)),
    "a3 per-channel": (8, np.array([-3, -1, 1, 3]) / 8, True, (3, 2)),
}


def uniform_layer_model(levels: int, weight_values, per_channel: bool, kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    C, O, H = 70, 24, 9
    g = GraphWriter("uniform")
    shape = [2, C, H, H] if kind == "conv" else [2, C]
    x = g.input("x", shape)
    step = 0.25
    thresholds = (np.arange(1, levels) - 0.5) * step / 2
    lv = np.arange(levels) * step - (0.5 if per_channel else 0.0)
    if per_channel:
        thresholds = thresholds[None, :] + rng.integers(-4, 4, size=(C, 1)) / 16
        lv = np.broadcast_to(lv, (C, levels))
    q = g.pa_quantize(x, Staircase(thresholds.astype(np.float32), np.ascontiguousarray(lv, dtype=np.float32)))
    w = rng.choice(np.asarray(weight_values, np.float32), size=(O, C, 3, 3) if kind == "conv" else (O, C))
    y = g.conv(q, w, dyadic(rng, (O,)), pad=1) if kind == "conv" else g.gemm(q, w, dyadic(rng, (O,)))
    g.output(y)
    return g.model(), dyadic(rng, shape, scale=16, span=12)


@pytest.mark.parametrize("kind", ["conv", "dense"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_uniform_levels_take_binary_planes_and_stay_exact(case, kind):
    levels, weight_values, per_channel, (want_n, want_m) = CASES[case]
    model, x = uniform_layer_model(levels, weight_values, per_channel, kind)
    compiled = patvm.compile(model, target="host", strategy="bit-serial", tuning_db=False)
    (layer,) = compiled.layers
    assert layer["strategy"] == "bit-serial", compiled.report()
    assert (layer["N"], layer["M"]) == (want_n, want_m), compiled.report()
    np.testing.assert_array_equal(compiled.run(x)[0], onnxruntime_run(model, {"x": x})[0])


def test_uneven_levels_keep_thermometer_planes():
    stair = Staircase(np.array([-0.5, 0.0, 0.5], np.float32), np.array([0.0, 0.25, 0.5, 1.0], np.float32))
    assert stair.binary_planes() is None
    assert Staircase(np.array([0.0, 0.5], np.float32), np.array([0.0, 0.5, 1.0], np.float32)).binary_planes() is None
    assert Staircase(np.arange(15, dtype=np.float32), np.arange(16, dtype=np.float32)).binary_planes() == 4
