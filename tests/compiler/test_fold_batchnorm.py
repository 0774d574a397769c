"""A BatchNorm after an fp32 conv folds into its weights (patvm.compiler.fold_batchnorm): the kernel's
epilogue loses the subtract and divide, the output still matches onnxruntime, and a binary layer on the
fp32 path keeps its weights as codes (the scaling runs at load time with their expansion)."""
import numpy as np
import pytest
from conftest import PA_WEIGHT_VALUES, compiled_kernels, dyadic, onnxruntime_run, staircase

import patvm
from patvm.onnx_format import GraphWriter


def batchnorm_after(g: GraphWriter, y: str, channels: int, rng) -> str:
    return g.batchnorm(y, rng.uniform(0.5, 2, channels), rng.standard_normal(channels),
                       rng.standard_normal(channels), rng.uniform(0.5, 2, channels))


@pytest.mark.parametrize("bias", [False, True], ids=["conv -> BN", "conv + bias -> BN (not folded)"])
def test_fp32_conv_batchnorm(bias):
    rng = np.random.default_rng(0)
    g = GraphWriter("bn")
    x = g.input("x", [2, 32, 10, 10])
    y = g.conv(x, rng.standard_normal((32, 32, 3, 3)).astype(np.float32) / 17,
               rng.standard_normal(32).astype(np.float32) if bias else None, pad=1)
    g.output(g.relu(batchnorm_after(g, y, 32, rng)))
    model, inp = g.model(), rng.standard_normal((2, 32, 10, 10)).astype(np.float32)
    compiled = patvm.compile(model, target="host", tuning_db=False)
    conv = next(k for k in compiled_kernels(compiled) if "conv2d" in k)
    assert ("divide" in conv) == bias, conv
    want = onnxruntime_run(model, {"x": inp})[0]
    np.testing.assert_allclose(compiled.run(inp)[0], want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_binary_layer_on_the_fp32_path_keeps_codes():
    rng = np.random.default_rng(1)
    g = GraphWriter("codes-bn")
    x = g.input("x", [2, 40, 7, 7])
    y = g.conv(g.pa_quantize(x, staircase(rng, 40)), rng.choice(PA_WEIGHT_VALUES, size=(24, 40, 3, 3)), pad=1)
    g.output(batchnorm_after(g, y, 24, rng))
    model, inp = g.model(), dyadic(rng, (2, 40, 7, 7))
    compiled = patvm.compile(model, target="host", strategy="fp32", tuning_db=False)
    (layer,) = compiled.layers
    assert layer["strategy"] == "fp32" and "codes" in layer["weight_kind"] and compiled.weight_codes, compiled.report()
    conv = next(k for k in compiled_kernels(compiled) if "conv2d" in k and "transform" not in k)
    assert "divide" not in conv, conv
    want = onnxruntime_run(model, {"x": inp})[0]
    np.testing.assert_allclose(compiled.run(inp)[0], want, rtol=0, atol=2e-5 * np.abs(want).max())
