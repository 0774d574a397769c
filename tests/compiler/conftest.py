"""Builders of small PA-ONNX models with dyadic values, so that fp32 arithmetic is exact everywhere and
the compiled output can be compared with onnxruntime bit for bit."""
from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest

from patvm.approx import Staircase, abc_activation_staircase
from patvm.onnx_format import GraphWriter

PA_LEVELS = np.array([0.0, 0.25, 0.5, 1.0, 2.0], np.float32)
PA_THRESHOLDS = np.array([-0.5, 0.0, 0.5, 1.0], np.float32)
PA_WEIGHT_VALUES = np.array([-0.75, -0.25, 0.0, 0.5, 1.0], np.float32)     # M = 4 planes
ABC_WEIGHT_VALUES = np.array([-0.5, 0.5], np.float32)                      # one {-1,+1} basis

# the single-layer cases every target is checked on (x86 here, CUDA in tests/targets/test_cuda.py)
LAYER_CASES = [
    dict(kind="conv"),
    dict(kind="conv", stride=2),
    dict(kind="conv", k=1, pad=0),
    dict(kind="conv", k=1, pad=0, stride=2, C=130, O=16),
    dict(kind="conv", per_channel=True, C=5, O=7, H=8),
    dict(kind="conv", per_channel=True, stride=2, C=64, O=32, H=10),
    dict(kind="conv", abc=True),                                 # {-1,+1} weights: 1 plane + offset
    dict(kind="conv", abc=True, per_channel=True, stride=2),     # non-zero bottom level, padded border
    dict(kind="conv", k=5, pad=2, C=3, O=5, H=7, W=11),
    dict(kind="conv", batch=1, C=64, O=64, H=14, relu=False, bias=False),
    dict(kind="dense"),
    dict(kind="dense", per_channel=True, C=33, O=10),
    dict(kind="dense", abc=True, C=129, O=9),
]


def dyadic(rng, shape, scale=8, span=16):
    return (rng.integers(-span, span, size=shape) / scale).astype(np.float32)


def staircase(rng, channels, per_channel=False, abc=False):
    if abc:
        t, lv = abc_activation_staircase([0.25, -0.125, 0.375], [0.5, 0.25, 0.125])
    else:
        t, lv = PA_THRESHOLDS, PA_LEVELS
    if not per_channel:
        return Staircase(t, lv)
    shift = rng.integers(-4, 4, size=(channels, 1)) / 8
    bottom = rng.integers(-2, 3, size=(channels, 1)) / 4 if abc else np.zeros((channels, 1))
    return Staircase((t[None, :] + shift).astype(np.float32), (lv[None, :] + bottom).astype(np.float32))


def binary_layer_model(kind="conv", C=70, O=24, H=9, W=None, k=3, stride=1, pad=1, batch=3, per_channel=False,
                       abc=False, bias=True, relu=True, seed=0, weight_values=None):
    """x -> PAQuantize -> Conv/Gemm(W_bar with few dyadic values) [-> Relu]; returns (model, input)."""
    rng = np.random.default_rng(seed)
    values = weight_values if weight_values is not None else (ABC_WEIGHT_VALUES if abc else PA_WEIGHT_VALUES)
    g = GraphWriter("layer")
    shape = [batch, C, H, W or H] if kind == "conv" else [batch, C]
    x = g.input("x", shape)
    q = g.pa_quantize(x, staircase(rng, C, per_channel, abc))
    b = dyadic(rng, (O,)) if bias else None
    if kind == "conv":
        y = g.conv(q, rng.choice(values, size=(O, C, k, k)), b, stride=stride, pad=pad)
    else:
        y = g.gemm(q, rng.choice(values, size=(O, C)), b)
    if relu:
        y = g.relu(y)
    g.output(y)
    return g.model(), dyadic(rng, shape, scale=8, span=12)


def compiled_kernels(compiled) -> set[str]:
    """The kernel (PrimFunc) names in a compiled module's code."""
    from patvm.runtime import module_source
    return set(re.findall(r"^__tvm_ffi_(\w+):", module_source(compiled.module.mod), re.M))


def onnxruntime_run(model, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.fixture(scope="session")
def host_target():
    return "host"
