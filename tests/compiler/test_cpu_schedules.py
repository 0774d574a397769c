"""What the CPU hand schedules (patvm.compiler.schedules.cpu) do to a bit-serial layer's loop nests: the
packer builds a vector of pixels' words at once, and the conv's epilogue writes each register tile's
outputs right after the tile. Output correctness is test_single_layer's job."""
import re

import pytest
import tvm
from conftest import binary_layer_model

from patvm.compiler.pipeline import Pipeline
from patvm.compiler.schedules import schedule_pass


def scheduled_kernels(model, target: str) -> dict[str, str]:
    pipeline = Pipeline.for_build(target, tuning_db=False, strategy="bit-serial")
    mod = pipeline.prepared(model)[0]
    with pipeline.spec.tvm_target():
        mod = schedule_pass(pipeline.spec.family)(mod)
    return {gv.name_hint: func.script() for gv, func in mod.functions_items()
            if isinstance(func, tvm.tirx.PrimFunc)}


def loops_around(script: str, block: str) -> list[str]:
    """The loop lines enclosing the first sblock `block`, innermost first."""
    lines = script.splitlines()
    at = next(k for k, line in enumerate(lines) if f'T.sblock("{block}")' in line)
    depth, loops = len(lines[at]) - len(lines[at].lstrip()), []
    for line in reversed(lines[:at]):
        indent = len(line) - len(line.lstrip())
        if indent < depth and line.lstrip().startswith("for "):
            loops.append(line.strip())
            depth = indent
    return loops


@pytest.mark.parametrize("target", ["x86-znver3", "x86-avx512"])
def test_packer_vectorised_over_pixels_and_epilogue_per_tile(target):
    model, _ = binary_layer_model(kind="conv", k=1, pad=0, stride=2, C=64, O=32, H=16)
    kernels = scheduled_kernels(model, target)
    pack = next(s for name, s in kernels.items() if "pack" in name)
    conv = next(s for name, s in kernels.items() if "bitserial" in name)
    # the OR over a word's 64 bits runs with the pixels innermost and vectorised
    assert "T.vectorized" in loops_around(pack, "pack_activation_planes_update")[0]
    # the output block sits in the register tile (unrolled tile loops), inside the output-channel tile loop,
    # not in a loop over all 32 output channels of the row
    output = re.findall(r'T\.sblock\("(\w+)"\)', conv)[-1]     # the epilogue (bias, ReLU) inlined into it
    around = loops_around(conv, output)
    assert all("T.unroll" in loop for loop in around[:2]), around
    assert not any("T.int64(32)" in loop for loop in around), around


@pytest.mark.parametrize("target", ["x86-znver3", "x86-avx512"])
def test_fp32_classifier_streams_weight_rows(target):
    """The batch-1 FC: the reduction outside a vector of output columns (each weight row read contiguously),
    columns in parallel chunks; outputs as onnxruntime's."""
    import numpy as np

    import patvm
    from patvm.onnx_format import GraphWriter
    rng = np.random.default_rng(0)
    g = GraphWriter("fc")
    x = g.input("x", [1, 256])
    g.output(g.gemm(x, rng.standard_normal((1000, 256)).astype(np.float32) / 16, rng.standard_normal(1000)))
    model = g.model()
    fc = next(s for name, s in scheduled_kernels(model, target).items() if "matmul" in name)
    around = loops_around(fc, "matmul_update")
    # innermost first: the vector of columns, then (k, the row's column vectors) with k outside, then threads
    assert "T.vectorized" in around[0] and around[1].startswith("for k, ") and "T.parallel" in around[-1], around
    if target == "x86-avx512":
        return
    inp = rng.standard_normal((1, 256)).astype(np.float32)
    want = ort_run(model, inp)
    np.testing.assert_allclose(patvm.compile(model, target="host", tuning_db=False).run(inp)[0], want,
                               rtol=0, atol=1e-5 * np.abs(want).max())


def ort_run(model, x):
    import onnxruntime as ort
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
