"""A quantizer on the fp32 path as elementwise arithmetic (patvm.compiler.elementwise_quantizers): between blocked fp32
convs it stays blocked and fuses into the producer's kernel (no kernel or layout transform of its own),
bit-exact against onnxruntime with dyadic values, NaN and infinities included."""
import re

import numpy as np
import pytest
from conftest import PA_WEIGHT_VALUES, compiled_kernels, dyadic, onnxruntime_run, staircase

import patvm
from patvm.approx import Staircase
from patvm.onnx_format import GraphWriter
from patvm.runtime import module_source


def fp32_run_with_a_quantizer(stair: Staircase, rng):
    """fp32 conv -> ReLU -> PAQuantize -> conv (PA weights, kept fp32) -> output, 32 channels."""
    g = GraphWriter("select")
    x = g.input("x", [2, 32, 8, 8])
    y = g.relu(g.conv(x, dyadic(rng, (32, 32, 3, 3), scale=64, span=8), None, pad=1))
    y = g.conv(g.pa_quantize(y, stair), rng.choice(PA_WEIGHT_VALUES, size=(32, 32, 3, 3)), None, pad=1)
    g.output(y)
    return g.model()


@pytest.mark.parametrize("per_channel", [False, True], ids=["per tensor", "per channel"])
def test_fp32_quantizer_fuses_and_stays_blocked(per_channel):
    rng = np.random.default_rng(0)
    model = fp32_run_with_a_quantizer(staircase(rng, 32, per_channel), rng)
    compiled = patvm.compile(model, target="host", strategy="fp32", tuning_db=False)
    assert [la["strategy"] for la in compiled.layers] == ["fp32", "fp32"], compiled.report()
    names = compiled_kernels(compiled)
    assert not any("sum" in k or "where" in k for k in names), names            # no count-and-lookup kernel
    assert any("conv2d_blocked" in k and "greater_equal" in k for k in names), names   # in the conv's epilogue
    inp = dyadic(rng, (2, 32, 8, 8))
    inp[0, :3, 0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    want = onnxruntime_run(model, {"x": inp})[0]
    np.testing.assert_array_equal(compiled.run(inp)[0], want)


def test_threshold_tests_are_masked_moves_on_avx512():
    """Each threshold test of the fused quantizer is a compare and a masked move of 1.0 (patvm's bool -> float
    legalisation), not TVM's cast of an i1, which LLVM lowers to mask -> -1, shift, int -> float convert."""
    rng = np.random.default_rng(2)
    model = fp32_run_with_a_quantizer(staircase(rng, 32, per_channel=True), rng)
    compiled = patvm.compile(model, target="x86-avx512", strategy="fp32", tuning_db=False)
    asm = module_source(compiled.module.mod)
    functions = re.split(r"^(?=[A-Za-z_]\w*:)", asm, flags=re.M)
    quantizing = "".join(f for f in functions if re.match(r"\w*conv2d_blocked\w*greater_equal", f))
    assert "vcmpgeps" in quantizing or "vcmpleps" in quantizing or "vcmpnltps" in quantizing, "no vector compare"
    assert "vcvtdq2ps" not in quantizing and "vpmovm2d" not in quantizing


def test_many_levels_keep_the_lookup():
    """An 8-bit quantizer (255 thresholds): 255 selects per value would cost more than the lookup."""
    rng = np.random.default_rng(1)
    stair = Staircase(((np.arange(255) - 127) / 64).astype(np.float32),
                      ((np.arange(256) - 128) / 32).astype(np.float32))
    model = fp32_run_with_a_quantizer(stair, rng)
    compiled = patvm.compile(model, target="host", tuning_db=False)
    assert any("sum" in k for k in compiled_kernels(compiled))
    inp = dyadic(rng, (2, 32, 8, 8))
    np.testing.assert_array_equal(compiled.run(inp)[0], onnxruntime_run(model, {"x": inp})[0])
