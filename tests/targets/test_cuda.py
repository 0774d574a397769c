"""CUDA targets (cuda-sm80 = A100, cuda-sm90 = H100/H200): build, CUDA source, PTX, and correctness.

Without a GPU (the build machine has none) a CUDA build holds CUDA C source only. What is checked here:
  * single PA / ABC layers and zoo models build for cuda-sm90 and cuda-sm80 through `patvm.compile`;
  * the CUDA source has `__popcll` in the bit-serial kernels, counts held in registers, every kernel bound;
  * nvcc turns it into PTX with `popc.b64` (skips if nvcc is missing);
  * the scheduled TIR is correct: every thread-bound loop of the CUDA-scheduled module made serial, built
    for the CPU and run (`serial_emulation`), gives onnxruntime's result (single dyadic layers bit for
    bit, exact-mode zoo models to the bar of tests/compiler/test_zoo_models.py). Thread-bound loops are
    parallel loops with barriers between siblings, so any serial order is one valid execution; the
    schedules here use no warp-level operations (no shuffles, no MMA), which is asserted.
On a machine with a CUDA GPU (`tvm.cuda(0).exist`) the same layers and zoo models also run on the GPU
and are compared with onnxruntime on the CPU; elsewhere those tests skip with "no CUDA GPU".
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from b1_mma_probe import bmma_and_popc_probe
from tvm import relax, tirx
from tvm.s_tir import dlight

import patvm
from patvm import zoo
from patvm.compiler.build import prepare
from patvm.compiler.pipeline import import_and_lower
from patvm.compiler.schedules import schedule_pass
from patvm.compiler.schedules.cuda import cuda_rules, cuda_source
from patvm.compiler.schedules.cuda_tensor_cores import TENSOR_CORE_ENV, BitSerialTensorCoreCUDA
from patvm.targets import cuda_available, resolve_target
from patvm.zoo import exact

# the dyadic single-layer builders live in tests/compiler/conftest.py: load that file under its own name
_HELPERS = "_patvm_compiler_helpers"
if _HELPERS not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _HELPERS, Path(__file__).resolve().parent.parent / "compiler" / "conftest.py")
    sys.modules[_HELPERS] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_HELPERS])
binary_layer_model = sys.modules[_HELPERS].binary_layer_model
onnxruntime_run = sys.modules[_HELPERS].onnxruntime_run

HAS_GPU = cuda_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU")
HAS_NVCC = shutil.which("nvcc") is not None
needs_nvcc = pytest.mark.skipif(not HAS_NVCC, reason="nvcc is not on the PATH (CUDA toolkit missing)")

LAYER_CASES = sys.modules[_HELPERS].LAYER_CASES
ARCH = {"cuda-sm80": "sm_80", "cuda-sm90": "sm_90"}

# zoo models built here through patvm.compile: (name, M, N, target); the rest of the matrix is slow
ZOO_BUILDS = [
    pytest.param("pa-resnet18", 2, 1, "cuda-sm90", id="pa-resnet18-M2N1-sm90"),
    pytest.param("abc-resnet18", 1, 1, "cuda-sm80", id="abc-resnet18-M1N1-sm80"),
    pytest.param("pa-mobilenet-v1", 2, 1, "cuda-sm90", id="pa-mobilenet-v1-M2N1-sm90"),
    pytest.param("pa-resnet18", 2, 1, "cuda-sm80", id="pa-resnet18-M2N1-sm80", marks=pytest.mark.slow),
    pytest.param("abc-resnet18", 1, 1, "cuda-sm90", id="abc-resnet18-M1N1-sm90", marks=pytest.mark.slow),
    pytest.param("pa-mobilenet-v1", 2, 1, "cuda-sm80", id="pa-mobilenet-v1-M2N1-sm80", marks=pytest.mark.slow),
    pytest.param("pa-resnet18", 4, 5, "cuda-sm90", id="pa-resnet18-M4N5-sm90", marks=pytest.mark.slow),
]
ZOO_EMULATED = [
    pytest.param("pa-resnet18", 2, 1, id="pa-resnet18-M2N1"),
    pytest.param("abc-resnet18", 1, 1, id="abc-resnet18-M1N1", marks=pytest.mark.slow),
    pytest.param("pa-mobilenet-v1", 2, 1, id="pa-mobilenet-v1-M2N1", marks=pytest.mark.slow),
    pytest.param("pa-resnet18", 4, 5, id="pa-resnet18-M4N5", marks=pytest.mark.slow),
]
ZOO_IMAGES = 8
OFF_OF_RANGE, DIFF_OF_RANGE = 1e-3, 1e-4     # the bar of tests/compiler/test_zoo_models.py


def case_id(case):
    return "-".join(f"{k}{v}" for k, v in case.items())


# ---- helpers

def scheduled(model, target: str = "cuda-sm90", tensor_cores: str | None = None):
    """What `patvm.compile` builds, stopped after the hand schedules: (spec, scheduled IRModule).
    tensor_cores: None (the default rules), "mma" (the b1 tensor-core rule first) or "emulated" (the same
    rule with the serial twins of its tensor intrinsics)."""
    spec = resolve_target(target)
    mod, _, _ = import_and_lower(model)
    mod = prepare(mod, spec)
    with spec.tvm_target():
        if tensor_cores is None:
            mod = schedule_pass(spec.family)(mod)
        else:
            rules = [BitSerialTensorCoreCUDA(emulate=tensor_cores == "emulated"), *cuda_rules(tensor_cores=False)]
            mod = dlight.ApplyDefaultSchedule(*rules)(mod)
    return spec, mod


_THREAD_LOOP = re.compile(r'T\.thread_binding\(([^()]*(?:\([^()]*\))?[^()]*), thread="[^"]+"')
_WARP_LEVEL = ("mma", "shfl", "shuffle", 'scope="warp"', "ldmatrix")


def serial_emulation(mod: tvm.IRModule, warp_buffers: bool = False):
    """The CUDA-scheduled module with every thread-bound loop made serial, built for this CPU: runs the
    exact loop nests, index arithmetic, predicates and register/shared buffers of the GPU kernels.
    warp_buffers: allow "warp"-scope buffers (the tensor-core accumulator tiles, indexed [lane, register]
    by every access, so plain arrays on the CPU) when no warp-level operation touches them."""
    functions = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            text = func.script(show_meta=True)
            if warp_buffers:
                text = text.replace('scope="warp"', 'scope="global"')
            assert not [w for w in _WARP_LEVEL if w in text], f"{gv.name_hint}: warp-level code cannot run serially"
            assert "T.thread_binding" in text, f"{gv.name_hint} has no thread binding"
            serial = _THREAD_LOOP.sub(lambda m: f"T.serial({m.group(1)}", text)
            assert "thread_binding" not in serial
            func = tvm.script.from_source(serial)
        functions[gv] = func
    executable = tvm.compile(tvm.IRModule(functions, attrs=mod.attrs), target=tvm.target.Target("llvm"))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return lambda *arrays: vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def kernels(source: str) -> dict[str, str]:
    """kernel name -> its definition's signature line, from CUDA source."""
    return {m.group(2): m.group(0) for m in
            re.finditer(r'extern "C" __global__ void (__launch_bounds__\(\d+\) )?(\w+)\(', source)}


def ptx_of(source: str, target: str) -> str:
    from tvm.support import nvcc
    with resolve_target(target).tvm_target():   # nvcc's version check reads Target.current()
        ptx = nvcc.compile_cuda(source, target_format="ptx", arch=ARCH[target], compiler="nvcc")
    return ptx.decode() if isinstance(ptx, (bytes, bytearray)) else str(ptx)


def nvcc_ptx(source: str, arch: str) -> str:
    """PTX of CUDA source for an arch ("sm_80"), whatever the preset."""
    from tvm.support import nvcc
    with tvm.target.Target({"kind": "cuda", "arch": arch}):
        ptx = nvcc.compile_cuda(source, target_format="ptx", arch=arch, compiler="nvcc")
    return ptx.decode() if isinstance(ptx, (bytes, bytearray)) else str(ptx)


B1_MMA_PTX = "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc"


def gpu_target() -> dict:
    """A CUDA target for the GPU of this machine."""
    major, minor = tvm.cuda(0).compute_version.split(".")
    return {"kind": "cuda", "arch": f"sm_{major}{minor}", "max_num_threads": 1024}


def exact_zoo(name, M, N, images=ZOO_IMAGES):
    model = zoo.build_model(name, M=M, N=N, batch=images, image_size=32, exact=True)
    x = exact.dyadic_images(np.random.default_rng([M, N, 32]), (images, 3, 32, 32))
    return model, x


def assert_zoo_bar(got, want):
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.float64) - want)
    span = float(np.ptp(want))
    summary = f"max |diff| {diff.max():.3g} (range {span:.3g}), top-1 {np.mean(got.argmax(1) == want.argmax(1)):.0%}"
    assert np.array_equal(got.argmax(1), want.argmax(1)), summary
    assert np.mean(diff > OFF_OF_RANGE * span) <= 1e-3, summary
    assert diff.max() <= DIFF_OF_RANGE * span, summary


# ---- build, source, emulation (no GPU needed)

@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_schedule_is_exact_and_builds_for_cuda(case):
    model, x = binary_layer_model(**case)
    spec, mod = scheduled(model)
    # the CUDA schedules, run serially on the CPU, give onnxruntime's output bit for bit
    got = serial_emulation(mod)(x)
    want = onnxruntime_run(model, {"x": x})[0]
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"
    # the same module as CUDA source
    source = cuda_source(tvm.compile(mod, target=spec.tvm_target()))
    names = kernels(source)
    assert "__popcll" in source
    assert all("__launch_bounds__" in line for line in names.values()), names
    assert any("bitserial" in n for n in names) and any("pack_activation" in n for n in names), names
    assert "bitserial_counts_local" in source          # integer counts in registers, not in global memory
    assert "pack_activation_planes_local" in source    # the packed word is ORed in a register
    if case.get("abc"):   # the corrections live in the one conv kernel: window counts in registers, a table
        assert sum("bitserial" in n for n in names) == 1 and not any("window" in n or "base" in n for n in names), names
        assert "bitserial_window_local" in source and "bitserial_window_term_ptr" not in source


@pytest.mark.parametrize("target", ["cuda-sm90", "cuda-sm80"])
def test_patvm_compile_for_cuda_targets(target):
    model, _ = binary_layer_model(kind="conv", abc=True, per_channel=True, stride=2)
    compiled = patvm.compile(model, target=target)
    assert compiled.family == "cuda" and compiled.target_name == target
    assert [layer["strategy"] for layer in compiled.layers] == ["bit-serial"], compiled.report()
    assert "__popcll" in cuda_source(compiled.module)


@needs_nvcc
@pytest.mark.parametrize("target", ["cuda-sm90", "cuda-sm80"])
def test_ptx_has_64_bit_popcount(target):
    model, _ = binary_layer_model(kind="conv", C=128, O=64, H=6)
    source = cuda_source(patvm.compile(model, target=target).module)
    ptx = ptx_of(source, target)
    assert f".target {ARCH[target]}" in ptx
    assert re.search(r"\bpopc\.b64\b", ptx), "no 64-bit popcount in the PTX"
    assert ".visible .entry fused_pa_bitserial" in ptx


@pytest.mark.parametrize("name,M,N,target", ZOO_BUILDS)
def test_zoo_model_builds_for_cuda(name, M, N, target):
    model = zoo.build_model(name, M=M, N=N, image_size=32)
    compiled = patvm.compile(model, target=target)
    strategies = [layer["strategy"] for layer in compiled.layers]
    assert strategies.count("bit-serial") >= 10, compiled.report()
    source = cuda_source(compiled.module)
    names = kernels(source)
    assert sum("bitserial" in n for n in names) >= 8 and "__popcll" in source
    assert all("__launch_bounds__" in line for line in names.values())


@pytest.mark.parametrize("name,M,N", ZOO_EMULATED)
def test_zoo_model_schedule_matches_onnxruntime(name, M, N):
    """The whole CUDA-scheduled zoo model (bit-serial kernels, packers, and TVM's dlight GPU schedules for
    the fp32 first conv, pooling and FC), run serially, against onnxruntime on an exact-mode model."""
    model, x = exact_zoo(name, M, N)
    _, mod = scheduled(model)
    assert_zoo_bar(serial_emulation(mod)(x), onnxruntime_run(model, {"input": x})[0])


# ---- b1 tensor cores (opt-in, sm_80+)

TC_CASES = [
    dict(kind="conv"),
    dict(kind="conv", abc=True, per_channel=True, stride=2),
    dict(kind="dense", abc=True, C=129, O=9),
    dict(kind="conv", k=1, pad=0, stride=2, C=130, O=16),
    dict(kind="conv", per_channel=True, C=5, O=7, H=8),
    dict(kind="conv", k=5, pad=2, C=3, O=5, H=7, W=11),
]
TC_DEFAULT = 3      # the first three by default, the rest with -m slow


def test_tensor_core_rule_is_opt_in(monkeypatch):
    monkeypatch.delenv(TENSOR_CORE_ENV, raising=False)
    assert not any(isinstance(r, BitSerialTensorCoreCUDA) for r in cuda_rules())
    monkeypatch.setenv(TENSOR_CORE_ENV, "1")
    assert isinstance(cuda_rules()[0], BitSerialTensorCoreCUDA)
    # below sm_80 the rule does not apply (no b1 m16n8k256 MMA)
    model, _ = binary_layer_model(kind="conv")
    spec = resolve_target("cuda-sm90")
    mod = prepare(import_and_lower(model)[0], spec)
    func = next(f for gv, f in mod.functions.items() if "bitserial" in gv.name_hint)
    assert BitSerialTensorCoreCUDA().apply(func, tvm.target.Target({"kind": "cuda", "arch": "sm_75"}), False) is None


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_b1_mma_probe_emits_and_popc(arch):
    target = tvm.target.Target({"kind": "cuda", "arch": arch}, host={"kind": "llvm"})
    source = cuda_source(tvm.compile(tvm.IRModule({"bmma_probe": bmma_and_popc_probe()}), target=target))
    assert B1_MMA_PTX in source
    assert B1_MMA_PTX in nvcc_ptx(source, arch)


@pytest.mark.parametrize("case", [pytest.param(c, id=case_id(c), marks=() if k < TC_DEFAULT else pytest.mark.slow)
                                  for k, c in enumerate(TC_CASES)])
def test_tensor_core_schedule_is_exact_and_emits_mma(case):
    """The b1 tensor-core schedule, with the serial twins of its intrinsics, run on the CPU: bit for bit
    onnxruntime's output (checks the GEMM normalisation, im2col, zero padding, tiling, the accumulator
    fragment layout and the store); the same schedule with the real intrinsics has the b1 MMA."""
    model, x = binary_layer_model(**case)
    _, emulated = scheduled(model, "cuda-sm80", tensor_cores="emulated")
    got = serial_emulation(emulated, warp_buffers=True)(x)
    want = onnxruntime_run(model, {"x": x})[0]
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"
    spec, mod = scheduled(model, "cuda-sm80", tensor_cores="mma")
    source = cuda_source(tvm.compile(mod, target=spec.tvm_target()))
    assert B1_MMA_PTX in source
    # ABC's window counts in the combining thread, not in a buffer the host would have to fill
    assert "bitserial_window_ptr" not in source and "bitserial_window_term_ptr" not in source
    if HAS_NVCC and case == TC_CASES[0]:
        for arch in ("sm_80", "sm_90"):
            assert B1_MMA_PTX in nvcc_ptx(source, arch)


def test_patvm_compile_with_tensor_cores(monkeypatch):
    monkeypatch.setenv(TENSOR_CORE_ENV, "1")
    model, _ = binary_layer_model(kind="conv", C=128, O=64, H=6)
    for target in ("cuda-sm80", "cuda-sm90"):
        assert B1_MMA_PTX in cuda_source(patvm.compile(model, target=target).module)


@pytest.mark.slow
def test_tensor_core_zoo_model_schedule_matches_onnxruntime():
    model, x = exact_zoo("pa-resnet18", 2, 1)
    _, mod = scheduled(model, "cuda-sm90", tensor_cores="emulated")
    assert_zoo_bar(serial_emulation(mod, warp_buffers=True)(x), onnxruntime_run(model, {"input": x})[0])


# ---- on a GPU

@needs_gpu
def test_b1_mma_probe_on_gpu():
    major = int(tvm.cuda(0).compute_version.split(".")[0])
    if major < 8:
        pytest.skip("the b1 m16n8k256 MMA needs sm_80+")
    target = tvm.target.Target(gpu_target(), host={"kind": "llvm"})
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, size=(16, 4), dtype=np.uint64)
    b = rng.integers(0, 2**64, size=(8, 4), dtype=np.uint64)
    with target:
        ex = tvm.compile(tvm.IRModule({"bmma_probe": bmma_and_popc_probe()}), target=target)
    dev = tvm.cuda(0)
    out = tvm.runtime.empty((16, 8), "int32", dev)
    ex.mod["bmma_probe"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), out)
    bits = lambda w: np.unpackbits(w.view(np.uint8), axis=-1)  # noqa: E731
    want = (bits(a)[:, None, :] & bits(b)[None, :, :]).sum(-1).astype(np.int32)
    np.testing.assert_array_equal(out.numpy(), want)


@needs_gpu
@pytest.mark.parametrize("case", TC_CASES, ids=case_id)
def test_tensor_core_layer_on_gpu_bit_exact(case, monkeypatch):
    if int(tvm.cuda(0).compute_version.split(".")[0]) < 8:
        pytest.skip("the b1 m16n8k256 MMA needs sm_80+")
    monkeypatch.setenv(TENSOR_CORE_ENV, "1")
    model, x = binary_layer_model(**case)
    got = patvm.compile(model, target=gpu_target()).run(x)[0]
    want = onnxruntime_run(model, {"x": x})[0]
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"


@needs_gpu
@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_on_gpu_bit_exact(case):
    model, x = binary_layer_model(**case)
    compiled = patvm.compile(model, target=gpu_target())
    assert [layer["strategy"] for layer in compiled.layers] == ["bit-serial"], compiled.report()
    got = compiled.run(x)[0]
    want = onnxruntime_run(model, {"x": x})[0]
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"


@needs_gpu
@pytest.mark.parametrize("name,M,N", [("pa-resnet18", 2, 1), ("abc-resnet18", 1, 1), ("pa-mobilenet-v1", 2, 1)])
def test_zoo_model_on_gpu_matches_onnxruntime(name, M, N):
    model, x = exact_zoo(name, M, N, images=16)
    compiled = patvm.compile(model, target=gpu_target())
    assert_zoo_bar(compiled.run(x)[0], onnxruntime_run(model, {"input": x})[0])
