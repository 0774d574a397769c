"""The next layer's quantize-and-pack fused into a bit-serial layer's epilogue (patvm.compiler.fuse_packing):
it happens (one PrimFunc holds the conv and the packer) and the result stays bit-identical to onnxruntime."""
import numpy as np
import pytest
from conftest import ABC_WEIGHT_VALUES, PA_WEIGHT_VALUES, dyadic, onnxruntime_run, staircase
from tvm import s_tir, tirx

import patvm
from patvm.compiler.build import prepare
from patvm.compiler.ops.bitserial import CONV_BLOCK
from patvm.compiler.ops.packing import PACK_BLOCK
from patvm.compiler.pipeline import import_and_lower
from patvm.compiler.schedules.common import block_names
from patvm.onnx_format import GraphWriter
from patvm.targets import resolve_target


def two_layer_model(C=64, O=64, H=8, residual=False, abc=False, per_channel=False, seed=0):
    """x -> q1 -> conv1 -> relu -> q2 -> conv2 [+ conv1's output] -> out, with dyadic values."""
    rng = np.random.default_rng(seed)
    values = ABC_WEIGHT_VALUES if abc else PA_WEIGHT_VALUES
    g = GraphWriter("two-layers")
    x = g.input("x", [2, C, H, H])
    h = g.relu(g.conv(g.pa_quantize(x, staircase(rng, C, per_channel, abc)), rng.choice(values, (O, C, 3, 3)),
                      dyadic(rng, (O,)), pad=1))
    y = g.conv(g.pa_quantize(h, staircase(rng, O, per_channel, abc)), rng.choice(values, (O, O, 3, 3)), pad=1)
    g.output(g.add(y, h) if residual else y)
    return g.model(), dyadic(rng, [2, C, H, H], span=12)


def fused_kernels(model, target="host") -> list[str]:
    """Names of the PrimFuncs that hold both a bit-serial conv and the packer."""
    spec = resolve_target(target)
    mod, _, _ = import_and_lower(model)
    mod = prepare(mod, spec)
    names = []
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        blocks = set(block_names(s_tir.Schedule(func)))
        if CONV_BLOCK in blocks and PACK_BLOCK in blocks:
            names.append(gv.name_hint)
    return names


CASES = [
    dict(),                                              # conv1's output only feeds q2: one output (packed)
    dict(residual=True),                                 # also read by the residual add: two outputs
    dict(C=70, O=70, per_channel=True),                  # channels past a word, per-channel thresholds
    dict(abc=True, per_channel=True, residual=True),     # ABC: window and bottom-level terms beside the conv
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "chain")
def test_fused_pack_is_bit_exact(case):
    model, x = two_layer_model(**case)
    assert fused_kernels(model), "no kernel holds both the conv and the next packer"
    got = patvm.compile(model, target="host", strategy="bit-serial").run(x)[0]
    want = onnxruntime_run(model, {"x": x})[0]
    assert np.array_equal(got, want), np.abs(got - want).max()


def test_cuda_keeps_the_packer_a_kernel_of_its_own():
    model, _ = two_layer_model()
    assert fused_kernels(model, "cuda-sm80") == []
