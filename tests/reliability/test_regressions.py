"""Named regression tests: each one is a failure the reliability work found, with its minimal model inline.

Open ones are `xfail(strict=True)`: when one starts passing, pytest says so and the mark comes off.
docs/reliability.md lists them with what was found and where.
"""
import numpy as np
import pytest

import patvm
from patvm.approx import Staircase
from patvm.fuzz import onnxruntime_outputs
from patvm.onnx_format import GraphWriter

F32 = np.float32

TVM_NAN_REASON = ("TVM legalises MaxPool to a max-reduction that drops NaN (LLVM maxnum / select order); "
                  "onnxruntime keeps it. Upstream fp32 op semantics, not patvm's kernels: the fuzzer keeps NaN "
                  "away from MaxPool (patvm.fuzz Tensor.special). Relu had the same problem: the importer now "
                  "rewrites it to a NaN-keeping select")


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


@pytest.mark.xfail(strict=True, reason=TVM_NAN_REASON)
def test_maxpool_with_nan_like_onnxruntime():
    """MaxPool 2x2 over [1, NaN, -1, 0.5]: onnxruntime NaN, patvm 0.5 (and [-1, .5, 1, NaN]: 1 vs NaN)."""
    g = GraphWriter("maxpool-nan")
    g.output(g.maxpool(g.input("x", [1, 1, 2, 2]), 2, 2))
    for values in ([1.0, np.nan, -1.0, 0.5], [-1.0, 0.5, 1.0, np.nan]):
        x = np.array(values, F32).reshape(1, 1, 2, 2)
        _, got, want = compiled_and_reference(g.model(), x)
        assert same(got, want), f"{values}: patvm {got.ravel()} vs onnxruntime {want.ravel()}"


def test_nan_straight_into_a_quantizer_is_exact():
    """The supported case beside the xfails: NaN reaching PAQuantize directly gives levels[0] in both."""
    g = GraphWriter("nan-quantizer")
    q = g.pa_quantize(g.input("x", [1, 1, 2, 2]), Staircase(np.array([0.0], F32), np.array([-1.0, 1.0], F32)))
    g.output(g.conv(q, np.ones((1, 1, 1, 1), F32)))
    x = np.array([np.nan, 1.0, -1.0, 0.5], F32).reshape(1, 1, 2, 2)
    _, got, want = compiled_and_reference(g.model(), x, strategy="bit-serial")
    assert same(got, want) and got.ravel().tolist() == [-1.0, 1.0, -1.0, 1.0]
