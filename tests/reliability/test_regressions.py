"""Named regression tests: each one is a failure the reliability work found, with its minimal model inline.

docs/reliability.md lists them with what was found and where. None is open; a newly found one that cannot be
fixed at once goes in as `xfail(strict=True)`, so pytest says when it starts passing.
"""
import itertools

import numpy as np

import patvm
from patvm.approx import Staircase
from patvm.onnx_format import GraphWriter
from patvm.testing import onnxruntime_outputs

F32 = np.float32

def same(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and np.array_equal(got, want, equal_nan=True)


def compiled_and_reference(model, x, strategy="auto"):
    compiled = patvm.compile(model, target="host", strategy=strategy)
    return compiled, compiled.run(x)[0], onnxruntime_outputs(model, {"x": x})[0]


def test_relu_keeps_nan_like_onnxruntime():
    """x = [NaN, 1, -1, 0.5] -> Relu: onnxruntime [NaN, 1, 0, 0.5], patvm [0, 1, 0, 0.5]."""
    g = GraphWriter("relu-nan")
    g.output(g.relu(g.input("x", [1, 1, 2, 2])))
    x = np.array([np.nan, 1.0, -1.0, 0.5], F32).reshape(1, 1, 2, 2)
    _, got, want = compiled_and_reference(g.model(), x)
    assert same(got, want), f"patvm {got.ravel()} vs onnxruntime {want.ravel()}"


def test_nan_through_relu_into_a_quantizer_gives_the_bottom_level():
    """The PA consequence: Relu(NaN) -> PAQuantize must give levels[0] (NaN), patvm gives the level of 0.

    x = [NaN, 1, -1, 0.5] -> Relu -> PAQuantize(t=[0], levels=[-1, 1]) -> 1x1 Conv(w=1):
    onnxruntime [-1, 1, 1, 1], patvm [1, 1, 1, 1]."""
    g = GraphWriter("relu-nan-quantizer")
    r = g.relu(g.input("x", [1, 1, 2, 2]))
    q = g.pa_quantize(r, Staircase(np.array([0.0], F32), np.array([-1.0, 1.0], F32)))
    g.output(g.conv(q, np.ones((1, 1, 1, 1), F32)))
    x = np.array([np.nan, 1.0, -1.0, 0.5], F32).reshape(1, 1, 2, 2)
    compiled, got, want = compiled_and_reference(g.model(), x, strategy="bit-serial")
    assert compiled.layers[0]["strategy"] == "bit-serial"
    assert same(got, want), f"patvm {got.ravel()} vs onnxruntime {want.ravel()}"


WINDOWS_WITH_NAN = list(itertools.permutations([1.0, np.nan, -1.0, np.inf]))


def maxpool_2x2_model():
    g = GraphWriter("maxpool-nan")
    g.output(g.maxpool(g.input("x", [len(WINDOWS_WITH_NAN), 1, 2, 2]), 2, 2))
    return g.model()


def test_maxpool_window_with_nan_gives_nan_wherever_the_nan_sits():
    """TVM's max-reduction gave inf, NaN, 1 or even -1 for [1, inf, NaN, -1] depending on the NaN's position;
    patvm now pools a NaN mask beside the values (IEEE 754-2019 `maximum`, as numpy and torch pool)."""
    x = np.array(WINDOWS_WITH_NAN, F32).reshape(-1, 1, 2, 2)
    got = patvm.compile(maxpool_2x2_model(), target="host").run(x)[0]
    assert np.isnan(got).all(), got.ravel()
    finite = np.array([[1.0, 0.5, -1.0, np.inf], [-3.0, -2.0, -1.0, -4.0]] * 12, F32).reshape(-1, 1, 2, 2)
    got, want = patvm.compile(maxpool_2x2_model(), target="host").run(finite)[0], finite.max(axis=(2, 3), keepdims=True)
    assert same(got, want)


def test_onnxruntime_maxpool_nan_depends_on_position_so_it_is_no_reference():
    """Why the fuzzer keeps NaN away from MaxPool: onnxruntime's own answer for a window holding NaN is
    NaN, inf or 1 depending on where the NaN sits. If this starts failing, onnxruntime has settled on a rule
    and the fuzzer can compare NaN windows again."""
    x = np.array(WINDOWS_WITH_NAN, F32).reshape(-1, 1, 2, 2)
    want = onnxruntime_outputs(maxpool_2x2_model(), {"x": x})[0].ravel()
    assert np.isnan(want).any() and not np.isnan(want).all(), want


def test_nan_straight_into_a_quantizer_is_exact():
    """The supported case beside the xfails: NaN reaching PAQuantize directly gives levels[0] in both."""
    g = GraphWriter("nan-quantizer")
    q = g.pa_quantize(g.input("x", [1, 1, 2, 2]), Staircase(np.array([0.0], F32), np.array([-1.0, 1.0], F32)))
    g.output(g.conv(q, np.ones((1, 1, 1, 1), F32)))
    x = np.array([np.nan, 1.0, -1.0, 0.5], F32).reshape(1, 1, 2, 2)
    _, got, want = compiled_and_reference(g.model(), x, strategy="bit-serial")
    assert same(got, want) and got.ravel().tolist() == [-1.0, 1.0, -1.0, 1.0]
