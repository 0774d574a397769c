"""fp32 convolutions in the blocked channel layout (patvm.compiler.ops.conv2d_blocked, layout.py): every
geometry of the zoo and the awkward ones, against onnxruntime, and proof that the blocked kernel is what ran."""
import re

import numpy as np
import onnxruntime as ort
import pytest
from conftest import PA_WEIGHT_VALUES, compiled_kernels, dyadic, staircase

import patvm
from patvm.compiler.ops.conv2d_blocked import nchw_blocks, output_tile, register_tile
from patvm.onnx_format import GraphWriter
from patvm.runtime import module_source

CASES = {   # name: (C, O, H, W, k, stride, pad)
    "3x3": (32, 32, 14, 14, 3, 1, 1),
    "3x3 stride 2": (32, 64, 15, 15, 3, 2, 1),
    "1x1": (64, 32, 7, 7, 1, 1, 0),
    "1x1 stride 2": (32, 64, 14, 14, 1, 2, 0),
    "7x7 stem": (3, 32, 30, 30, 7, 2, 3),
    "odd width": (16, 16, 9, 13, 3, 1, 1),
    "O not a multiple of 16": (16, 24, 8, 8, 3, 1, 1),
    "C not a multiple of 16": (24, 16, 8, 8, 3, 1, 1),
    "5x5 no padding": (16, 16, 11, 11, 5, 1, 0),
}


def conv_block_model(C, O, H, W, k, stride, pad, seed=0, residual=False):
    """conv -> BatchNorm -> (+ x) -> ReLU -> conv(3x3, O->16): two fp32 layers, so a blocked run."""
    rng = np.random.default_rng(seed)
    g = GraphWriter("fp32")
    x = g.input("x", [2, C, H, W])
    y = g.conv(x, rng.standard_normal((O, C, k, k)).astype(np.float32) / np.sqrt(C * k * k),
               rng.standard_normal(O).astype(np.float32), stride=stride, pad=pad)
    y = g.batchnorm(y, rng.uniform(0.5, 2, O), rng.standard_normal(O), rng.standard_normal(O), rng.uniform(0.5, 2, O))
    if residual:
        y = g.add(y, x)
    y = g.conv(g.relu(y), rng.standard_normal((16, O, 3, 3)).astype(np.float32) / np.sqrt(O * 9), None, pad=1)
    g.output(y)
    return g.model(), rng.standard_normal((2, C, H, W)).astype(np.float32)


def onnxruntime_output(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_convs_match_onnxruntime(case):
    model, x = conv_block_model(*CASES[case])
    compiled = patvm.compile(model, target="host", tuning_db=False)
    want = onnxruntime_output(model, x)
    got = compiled.run(x)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_a_residual_run_stays_blocked_and_uses_fma():
    model, x = conv_block_model(32, 32, 14, 14, 3, 1, 1, residual=True)
    compiled = patvm.compile(model, target="host", tuning_db=False)
    want = onnxruntime_output(model, x)
    np.testing.assert_allclose(compiled.run(x)[0], want, rtol=0, atol=2e-5 * np.abs(want).max())
    asm = module_source(compiled.module.mod)
    kernels = set(re.findall(r"^__tvm_ffi_(\w+):", asm, re.M))
    assert sum("conv2d_blocked" in k for k in kernels) == 2 and "vfmadd" in asm, kernels
    # the two convs exchange a blocked tensor: only the graph's input and its output are transformed
    assert sum("layout_transform" in k for k in kernels) == 2, kernels


def test_a_shortcut_between_bit_serial_layers_goes_back_to_nchw_once():
    """fp32 conv -> max-pool (blocked) -> PA conv -> + the pool's output -> ReLU -> PA conv: the add and
    the ReLU run in NCHW, inside the first PA conv's kernel; the pool's output is unblocked once, not
    blocked again for the add and unblocked for the next packer (patvm.compiler.layout.plain_elementwise)."""
    from patvm.zoo.schemes import Scheme
    rng = np.random.default_rng(3)
    scheme = Scheme("pa", 2, 1)
    g = GraphWriter("shortcut")
    x = g.input("x", [1, 16, 16, 16])
    pool = g.maxpool(g.relu(g.conv(x, rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 12, None, pad=1)),
                     3, 2, 1)
    sample = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)

    def binary_conv(t):
        return g.conv(g.pa_quantize(t, scheme.staircase(sample)),
                      scheme.approximate(rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 12), pad=1)

    g.output(binary_conv(g.relu(g.add(binary_conv(pool), pool))))
    model = g.model()
    inp = rng.standard_normal((1, 16, 16, 16)).astype(np.float32)
    compiled = patvm.compile(model, target="host", tuning_db=False)
    assert [la["strategy"] for la in compiled.layers] == ["fp32", "bit-serial", "bit-serial"], compiled.report()
    want = onnxruntime_output(model, inp)
    np.testing.assert_allclose(compiled.run(inp)[0], want, rtol=0, atol=1e-4 * np.abs(want).max())
    kernels = compiled_kernels(compiled)
    transforms = sorted(k for k in kernels if "layout_transform" in k)
    assert len(transforms) == 2, kernels        # the input's blocking and the pool's unblocking
    assert any("bitserial" in k and "add" in k and "relu" in k for k in kernels), kernels


def test_register_tile_fits_the_registers_and_wastes_little():
    assert output_tile(56, lanes=8, registers=16, block=16) == 6     # AVX2: 6 pixels x 2 vectors = 12 accumulators
    assert output_tile(7, lanes=8, registers=16, block=16) == 4      # 7 -> 8 padded, not 12
    assert output_tile(14, lanes=8, registers=16, block=16) == 5     # 14 -> 15
    assert output_tile(56, lanes=16, registers=32, block=16) == 14   # AVX-512: one vector per block
    assert output_tile(7, lanes=16, registers=32, block=32) == 7     # the whole row, not 12 padded
    # AVX-512: two 16-channel blocks per tile, so each broadcast feeds two FMAs; AVX2 and NEON: one block is
    # already two (four) vectors; depthwise: one block
    assert register_tile(56, 8, lanes=16, registers=32, block=16) == (14, 2)
    assert register_tile(7, 32, lanes=16, registers=32, block=16) == (7, 2)
    assert register_tile(56, 3, lanes=16, registers=32, block=16) == (14, 1)
    assert register_tile(56, 8, lanes=16, registers=32, block=16, depthwise=True) == (14, 1)
    assert register_tile(56, 8, lanes=8, registers=16, block=16) == (6, 1)
    assert register_tile(56, 8, lanes=4, registers=32, block=16) == (output_tile(56, 4, 32, 16), 1)
    assert nchw_blocks(3, 64, 16) == (3, 16) and nchw_blocks(24, 16, 16) is None and nchw_blocks(16, 24, 16) == (16, 8)


def fma_loops(asm: str, kernel: str) -> list[str]:
    """The basic blocks (LLVM asm text) of `kernel`'s functions that hold FMAs."""
    blocks, current, inside = [], [], False
    for line in asm.splitlines():
        if re.match(r"^[A-Za-z_]\w*:", line):             # a function label: its blocks are kernel's?
            inside = line.startswith(kernel)
            current = []
            blocks.append(current)
        elif re.match(r"^\.LBB\w*:", line):
            current = []
            blocks.append(current)
        elif inside and line.startswith("\t") and not line.lstrip().startswith((".", "#")):
            current.append(line.strip())
    return ["\n".join(b) for b in blocks if any("vfmadd" in i for i in b)]


@pytest.mark.parametrize("size", [28, 7])
def test_avx512_register_tile_is_two_blocks_without_spills(size):
    """On AVX-512 a tile is 14 (28x28) or 7 (7x7, one row) pixels x two 16-channel blocks: per input channel
    one broadcast feeds two FMAs (one block per tile: 14 FMAs a step, one broadcast each), no accumulator
    spilled to the stack; the 7x7 conv runs input block by input block over all rows (its inner loop
    reads no accumulator from memory)."""
    model, _ = conv_block_model(64, 64, size, size, 3, 1, 1)
    compiled = patvm.compile(model, target="x86-avx512", tuning_db=False)
    asm = module_source(compiled.module.mod)
    kernel = next(k for k in re.findall(r"^(\w+):", asm, re.M) if k.startswith("fused_conv2d_blocked_"))
    loops = fma_loops(asm, kernel.split("_compute")[0])
    hot = max(loops, key=lambda b: b.count("vfmadd"))
    fmas = [i for i in hot.splitlines() if i.startswith("vfmadd")]
    assert len(fmas) == (28 if size == 28 else 14), hot
    stores = [i for i in hot.splitlines() if i.startswith("vmov") and i.endswith(")")]
    assert not stores and "rsp" not in hot, hot      # accumulators stay in registers, none spilled
    assert sum(i.startswith("vbroadcastss") for i in hot.splitlines()) == len(fmas) // 2, hot


@pytest.mark.parametrize("group,dilation", [(2, 1), (4, 1), (1, 2), (64, 2)], ids=["groups 2", "groups 4", "dilated",
                                                                                   "depthwise dilated"])
def test_grouped_and_dilated_convs_between_blocked_layers(group, dilation):
    """ConvertLayout blocks these too (their weights' output channels divide into blocks); patvm computes
    them with TVM's NCHW conv between unblocking and blocking steps."""
    rng = np.random.default_rng(group + dilation)
    g = GraphWriter("grouped")
    x = g.input("x", [1, 64, 12, 12])
    y = g.conv(x, rng.standard_normal((64, 64 // group, 3, 3)).astype(np.float32), None, pad=dilation, group=group,
               dilation=dilation)
    y = g.conv(g.relu(y), rng.standard_normal((32, 64, 3, 3)).astype(np.float32), None, pad=1)
    g.output(y)
    model = g.model()
    x = rng.standard_normal((1, 64, 12, 12)).astype(np.float32)
    want = onnxruntime_output(model, x)
    got = patvm.compile(model, target="host", tuning_db=False).run(x)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


DEPTHWISE_CASES = {   # name: (C, H, W, k, stride, pad)
    "3x3": (32, 14, 14, 3, 1, 1),
    "3x3 stride 2": (64, 15, 15, 3, 2, 1),
    "odd width": (16, 9, 13, 3, 1, 1),
    "5x5 no padding": (48, 11, 11, 5, 1, 0),
    "7 wide": (32, 7, 7, 3, 1, 1),
}


@pytest.mark.parametrize("case", sorted(DEPTHWISE_CASES))
def test_depthwise_convs_run_blocked_between_blocked_layers(case):
    """1x1 conv -> BatchNorm -> ReLU -> depthwise -> BatchNorm -> ReLU -> 1x1 conv (a MobileNet block): the
    depthwise conv is patvm's blocked kernel, and no layout transform separates it from its neighbours."""
    C, H, W, k, stride, pad = DEPTHWISE_CASES[case]
    rng = np.random.default_rng(C + H + k)
    g = GraphWriter("depthwise")
    x = g.input("x", [2, C, H, W])

    def batchnorm_relu(y):
        return g.relu(g.batchnorm(y, rng.uniform(0.5, 2, C), rng.standard_normal(C), rng.standard_normal(C),
                                  rng.uniform(0.5, 2, C)))

    y = batchnorm_relu(g.conv(x, rng.standard_normal((C, C, 1, 1)).astype(np.float32) / np.sqrt(C), None))
    y = batchnorm_relu(g.conv(y, rng.standard_normal((C, 1, k, k)).astype(np.float32) / k, None, stride=stride,
                              pad=pad, group=C))
    g.output(g.conv(y, rng.standard_normal((16, C, 1, 1)).astype(np.float32) / np.sqrt(C), None))
    model = g.model()
    x = rng.standard_normal((2, C, H, W)).astype(np.float32)
    compiled = patvm.compile(model, target="host", tuning_db=False)
    want = onnxruntime_output(model, x)
    np.testing.assert_allclose(compiled.run(x)[0], want, rtol=0, atol=2e-5 * np.abs(want).max())
    kernels = compiled_kernels(compiled)
    assert sum("depthwise_conv2d_blocked" in k for k in kernels) == 1, kernels
    assert sum("layout_transform" in k for k in kernels) == 2, kernels   # the graph's input and output only


@pytest.mark.parametrize("case", sorted(DEPTHWISE_CASES))
def test_depthwise_convs_between_bit_serial_layers_stay_nchw(case):
    """PA 1x1 conv -> ReLU -> depthwise -> ReLU -> PA 1x1 conv (a binary MobileNet block): the depthwise conv
    runs in NCHW (patvm's row-vectorised kernel, strided ones on column phases), with no layout transform
    around it; bit for bit with dyadic values."""
    C, H, W, k, stride, pad = DEPTHWISE_CASES[case]
    rng = np.random.default_rng(C + H + k)
    g = GraphWriter("depthwise-nchw")
    x = g.input("x", [2, C, H, W])

    def binary_1x1(t):
        return g.conv(g.pa_quantize(t, staircase(rng, C)), rng.choice(PA_WEIGHT_VALUES, size=(C, C, 1, 1)), None)

    y = g.relu(binary_1x1(x))
    y = g.relu(g.conv(y, dyadic(rng, (C, 1, k, k), scale=16), dyadic(rng, (C,)), stride=stride, pad=pad, group=C))
    g.output(binary_1x1(y))
    model = g.model()
    x = dyadic(rng, (2, C, H, W))
    compiled = patvm.compile(model, target="host", tuning_db=False, strategy="bit-serial")
    assert [la["strategy"] for la in compiled.layers] == ["bit-serial", "fp32", "bit-serial"], compiled.report()
    np.testing.assert_array_equal(compiled.run(x)[0], onnxruntime_output(model, x))
    kernels = compiled_kernels(compiled)
    assert sum("depthwise_conv2d_nchw" in k for k in kernels) == 1, kernels
    assert not any("layout_transform" in k for k in kernels), kernels
