"""Hand schedules for NVIDIA GPUs (target kind "cuda"), as dlight ScheduleRules.

`BitSerialCUDA` (PrimFuncs with the "bitserial_conv" block): one thread per output value (pixel x output
channel); the output channels vary fastest across the threads of a warp, so the weight words
(`[KH, KW, NW, CW, O]`, O innermost) are read coalesced and the activation word is one broadcast load.
Each thread ANDs 64-bit words and `__popcll`s them into per-plane-pair integer counters held in
registers ("local"), then forms the phi-weighted sum (also in a register). The NCHW output, with the
fused epilogue (bias, ReLU, residual add, ...) and the bottom-level table inlined into it, is written by
the same thread right after. The pad is inlined (a select on the load).

`PackActivationCUDA` (the thermometer packer): one thread per output word, with the image column `w`
fastest across threads so that the float loads `X[n, c, h, w]` are coalesced; the 64-bit OR reduction
runs serially (unrolled) in each thread.

Every other PrimFunc (fp32 first/last layers, depthwise convs, pooling, dense, softmax, elementwise)
goes to TVM's own dlight GPU rules: Matmul (the fp32 first conv, as a GEMM), then `SmallReductionCUDA`
(short reductions such as 3x3 depthwise convs and pooling: one thread per output), GEMV, Reduction,
GeneralReduction, and Fallback (which binds any loop nest; every PrimFunc must carry thread bindings or
the CUDA build fails with "did you forget to bind?"). dlight's analyses can throw on shapes they do not
expect (0.27's GEMV asserts on some depthwise convs): `Guarded` turns that into "does not apply".

`BitSerialTensorCoreCUDA` (opt-in: PATVM_CUDA_TENSOR_CORES=1, sm_80+) computes the integer counts as one
b1 GEMM on tensor cores (`mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc`) through tensor
intrinsics registered here. docs/cuda.md describes both paths and what has been verified without a GPU.
"""
from __future__ import annotations

import logging
import os
import shutil

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from patvm.compiler.ops.bitserial import CONV_BLOCK, COUNT_BLOCK, WINDOW_BLOCK, WINDOW_TERM_BLOCK
from patvm.compiler.ops.packing import PACK_BLOCK
from patvm.compiler.schedules.common import block_names, inline_all_except, loop_extent

logger = logging.getLogger(__name__)


def _is_cuda(target: Target) -> bool:
    return target.kind.name == "cuda"


def _max_threads(target: Target) -> int:
    return int(target.attrs.get("max_num_threads", 1024) or 1024)








def _threads_for(total: int, max_threads: int, preferred: int = 256) -> int:
    """Threads per block for `total` independent work items: a multiple of the warp size, at most
    `preferred`, and no more than needed (rounded up to a warp)."""
    cap = max(32, min(preferred, max_threads))
    return min(cap, max(32, (total + 31) // 32 * 32))


def bind_spatial(sch: s_tir.Schedule, block, max_threads: int, preferred: int = 256, order=None):
    """Fuse the spatial loops of `block` (in `order` if given: indices into its spatial loops), split the
    result into (blockIdx.x, threadIdx.x); reductions stay serial in each thread, after decompose.
    Returns the thread loop."""
    iters = sch.get(block).iter_vars
    loops = sch.get_loops(block)
    assert len(loops) == len(iters), "block is not in its canonical loop nest"
    spatial = [lp for lp, iv in zip(loops, iters) if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [lp for lp, iv in zip(loops, iters) if iv.iter_type != tirx.IterVar.DataPar]
    if order is not None:
        spatial = [spatial[k] for k in order]
    if not spatial:
        spatial = [sch.add_unit_loop(block)]
    sch.reorder(*spatial, *reduce)
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    threads = _threads_for(loop_extent(sch, fused), max_threads, preferred)
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    if reduce:
        try_decompose_reduction(sch, block, reduce[0])
    return tx


def _loops_below(sch: s_tir.Schedule, block, anchor) -> tuple[list, list]:
    """After compute_at(counts, anchor) with one output per thread: the (plane, reduction) loops of the
    counts block below `anchor`. compute_at drops loops of extent 1, so the remaining loops are the
    plane-pair loops (pi, pj) and the reductions (kh, kw, cw) whose extent is > 1, in that order."""
    loops = sch.get_loops(block)
    position = next(k for k, lp in enumerate(loops) if sch.get_sref(lp).same_as(sch.get_sref(anchor)))
    below = loops[position + 1:]
    iters = sch.get(block).iter_vars               # n, oh, ow, pi, pj, o, kh, kw, cw
    planes = [int(iv.dom.extent) for iv in iters[3:5]]
    reductions = [int(iv.dom.extent) for iv in iters[6:]]
    kept_planes = sum(1 for e in planes if e > 1)
    expected = [e for e in planes if e > 1] + [e for e in reductions if e > 1]
    assert [loop_extent(sch, lp) for lp in below] == expected, "unexpected loop nest below the thread loop"
    return below[:kept_planes], below[kept_planes:]


def try_decompose_reduction(sch: s_tir.Schedule, block, loop) -> None:
    """Split the init of a reduction off before `loop`. After a thread split whose tail needs a predicate
    TVM may no longer see the bindings as quasi-affine and refuses; then the block keeps its init, which
    lowers to `if (first reduction step) acc = init` inside the loop: the same result (and free once the
    loop is unrolled)."""
    try:
        sch.decompose_reduction(block, loop)
    except s_tir.ScheduleError as exc:
        logger.debug("decompose_reduction refused, init stays in the loop: %s", str(exc).splitlines()[-1])


class _SafeRule(ScheduleRule):
    """A hand rule that must never break the build: if it throws on a shape it was not written for, the
    PrimFunc gets dlight's Fallback (every block bound, correct, slow) and a warning says so."""

    def matches(self, func: tirx.PrimFunc, target: Target) -> bool:
        raise NotImplementedError

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
        raise NotImplementedError

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not _is_cuda(target) or not self.matches(func, target):
            return None
        try:
            return self.schedule(func, target)
        except Exception as exc:  # noqa: BLE001 - any failure: the generic, correct schedule instead
            logger.warning("%s failed (%s); using dlight's Fallback schedule", type(self).__name__,
                           (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200])
            return dlight.gpu.Fallback().apply(func, target, tunable)


class BitSerialCUDA(_SafeRule):
    """One thread per (output pixel, output channel); see the module docstring."""

    def __init__(self, threads: int = 128):
        self.threads = threads

    def matches(self, func: tirx.PrimFunc, target: Target) -> bool:
        names = block_names(s_tir.Schedule(func))
        return CONV_BLOCK in names and COUNT_BLOCK in names

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
        sch = s_tir.Schedule(func)
        last = block_names(sch)[-1]
        inline_all_except(sch, {COUNT_BLOCK, CONV_BLOCK, last, WINDOW_BLOCK, WINDOW_TERM_BLOCK})

        conv = sch.get_sblock(CONV_BLOCK)
        counts = sch.get_sblock(COUNT_BLOCK)
        n, oh, ow, o, i, _j = sch.get_loops(conv)
        # threads: o_tile output channels (fastest: coalesced weight words) x p_tile output pixels;
        # blocks: (pixel tiles, channel tiles). o_tile divides O, so only the pixel split has a tail.
        max_threads = min(self.threads, _max_threads(target))
        n_out = loop_extent(sch, o)
        o_tile = max(d for d in range(1, min(n_out, max_threads) + 1) if n_out % d == 0)
        pixels = sch.fuse(n, oh, ow)
        p_tile = max(1, min(max_threads // o_tile, loop_extent(sch, pixels)))
        po, pi_ = sch.split(pixels, [None, p_tile])
        oo, oi = sch.split(o, [None, o_tile])
        sch.reorder(po, oo, pi_, oi)
        bx = sch.fuse(po, oo)
        tx = sch.fuse(pi_, oi)
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        # the integer counts of this thread's output, all plane pairs, in registers; the plane loops
        # innermost and unrolled, so that each (kh, kw, cw) step loads NW weight words and NA activation
        # words once and does NW x NA AND + __popcll on them
        sch.compute_at(counts, tx)
        sch.set_scope(counts, 0, "local")
        plane_loops, reduce_loops = _loops_below(sch, counts, tx)
        if reduce_loops:
            sch.reorder(*reduce_loops, *plane_loops)
            try_decompose_reduction(sch, counts, reduce_loops[0])
        for loop in plane_loops:
            sch.unroll(loop)
        window_in_thread(sch, tx)
        for loop in sch.get_loops(conv)[2:]:    # the phi combine over (i, j): unrolled
            sch.unroll(loop)
        if last != CONV_BLOCK:
            sch.set_scope(conv, 0, "local")
            sch.reverse_compute_at(sch.get_sblock(last), tx)
        try_decompose_reduction(sch, conv, i)
        return sch


class PackActivationCUDA(_SafeRule):
    """The thermometer packer: one thread per output word, w fastest (coalesced float loads)."""

    def matches(self, func: tirx.PrimFunc, target: Target) -> bool:
        return PACK_BLOCK in block_names(s_tir.Schedule(func))

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
        sch = s_tir.Schedule(func)
        inline_all_except(sch, {PACK_BLOCK})
        max_threads = _max_threads(target)
        for name in block_names(sch):
            if name != PACK_BLOCK:              # anything not inlinable: a plain spatial kernel
                bind_spatial(sch, sch.get_sblock(name), max_threads)
        block = sch.get_sblock(PACK_BLOCK)
        # the word is OR-accumulated in a register and stored once
        store = sch.cache_write(block, 0, "local")
        # one thread per word; loops n, h, w, j, cw -> n, h, j, cw, w: w fastest across threads
        tx = bind_spatial(sch, store, max_threads, order=[0, 1, 3, 4, 2])
        sch.compute_at(block, tx)
        bits = sch.get_loops(block)[-1]
        try_decompose_reduction(sch, block, bits)
        sch.unroll(bits)
        return sch


class SmallReductionCUDA(ScheduleRule):
    """fp32 PrimFuncs whose reductions are short (depthwise convs: 9 taps, pooling windows, a small
    global average pool): one thread per output with the reduction serial in it (dlight's Fallback).
    dlight's Reduction / GeneralReduction would give every output its own thread block with 256
    threads splitting a 9-element reduction."""

    def __init__(self, max_extent: int = 256):
        self.max_extent = max_extent
        self.fallback = dlight.gpu.Fallback()

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not _is_cuda(target):
            return None
        sch = s_tir.Schedule(func)
        extents = []
        for name in block_names(sch):
            reduce = [int(iv.dom.extent) for iv in sch.get(sch.get_sblock(name)).iter_vars
                      if iv.iter_type == tirx.IterVar.CommReduce]
            if reduce:
                total = 1
                for extent in reduce:
                    total *= extent
                extents.append(total)
        if not extents or max(extents) > self.max_extent:
            return None
        return self.fallback.apply(func, target, tunable)


class Guarded(ScheduleRule):
    """A dlight rule whose analysis may throw on shapes it does not expect (0.27's GEMV asserts on some
    depthwise convs, for example): a failure means "does not apply", so the next rule is tried."""

    def __init__(self, rule: ScheduleRule):
        self.rule = rule

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        try:
            return self.rule.apply(func, target, tunable)
        except Exception as exc:  # noqa: BLE001 - AssertionError, ScheduleError, TVMError, ...
            logger.debug("dlight %s does not apply: %s", type(self.rule).__name__, exc)
            return None

    def __repr__(self) -> str:
        return f"Guarded({type(self.rule).__name__})"


def use_nvcc_without_nvrtc() -> str | None:
    """TVM 0.27 turns CUDA source into a cubin at build time (on a machine with a GPU driver) with NVRTC
    from the `cuda-bindings` pip package by default, and fails if that is not installed. Then use the
    nvcc subprocess (TVM_CUDA_COMPILE_MODE=nvcc) when nvcc is on the PATH. A value the user set is kept.
    Returns the mode in effect (None: TVM's default)."""
    if "TVM_CUDA_COMPILE_MODE" in os.environ:
        return os.environ["TVM_CUDA_COMPILE_MODE"]
    try:
        import cuda.bindings.nvrtc  # noqa: F401 - only whether it imports
    except ImportError:
        if shutil.which("nvcc"):
            os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
            return "nvcc"
    return None


def cuda_rules(tensor_cores: bool | None = None) -> list:
    """The rules for family "cuda", in the order dlight tries them (the first that applies wins).
    tensor_cores: try the b1 tensor-core rule first on sm_80+ (None: the PATVM_CUDA_TENSOR_CORES
    environment variable, off by default)."""
    use_nvcc_without_nvrtc()
    gpu = dlight.gpu
    if tensor_cores is None:
        tensor_cores = tensor_cores_enabled()
    return [
        *([BitSerialTensorCoreCUDA()] if tensor_cores else []),
        BitSerialCUDA(),
        PackActivationCUDA(),
        Guarded(gpu.Matmul()),
        SmallReductionCUDA(),
        Guarded(gpu.GEMV()),
        Guarded(gpu.Reduction()),
        Guarded(gpu.GeneralReduction()),
        gpu.Fallback(),
    ]


def cuda_source(module) -> str:
    """The CUDA C source of a built module: an Executable, its `.mod`, or any runtime module."""
    from patvm.runtime import module_source
    return module_source(getattr(module, "mod", module), "cuda")


# ---- b1 tensor cores (sm_80+): mma.sync m16n8k256 .b1 .and.popc, opt-in (see docs/cuda.md)

BMMA_SHAPE = (16, 8, 4)   # m16n8k256: 16 rows x 8 columns, k = 256 bits = 4 uint64 words
TENSOR_CORE_ENV = "PATVM_CUDA_TENSOR_CORES"
INTRIN_MMA = "patvm_b1_mma_and_popc_m16n8k256"
INTRIN_FILL = "patvm_b1_mma_fill_m16n8_i32"
INTRIN_STORE = "patvm_b1_mma_store_m16n8_i32"
EMULATED = "_emulated"


def _register_b1_intrinsics() -> None:
    """Register the tensor intrinsics of the b1 tile, and their serial twins ("..._emulated").

    The tile: C[i, j] += sum_k popcount(A[i, k] & B[j, k]) for 16 rows i, 8 columns j, 4 uint64 words k,
    A and B read from global memory, C in a warp-level register fragment ("warp" scope [32 lanes, 4]):
    element (i, j) lives in lane 4 (i % 8) + j // 2, register 2 (i // 8) + j % 2 (the PTX accumulator
    layout of every m16n8 MMA). The counts are int32 in the fragment (`unsafe_set_dtype` of the uint64
    count buffer; exact, a count is at most KH*KW*C), which is what the MMA accumulates.

    The "_emulated" twins have the same description and a plain per-lane implementation (each lane sums
    its own 4 outputs with popcounts): a correct, slow GPU kernel, and one that runs serially on a CPU, so
    that everything of the schedule except the MMA instruction itself can be checked without a GPU."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    word = "uint64"

    @T.prim_func(s_tir=True)
    def mma_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 4), word, offset_factor=1, scope="global")
        B = T.match_buffer(b, (8, 4), word, offset_factor=1, scope="global")
        C = T.match_buffer(c, (32, 4), "int32", offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(C[0:32, 0:4], A[0:16, 0:4], B[0:8, 0:4])
            T.writes(C[0:32, 0:4])
            for i, j, k in T.grid(16, 8, 4):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    T.reads(C[(vi % 8) * 4 + vj // 2, (vi // 8) * 2 + vj % 2], A[vi, vk], B[vj, vk])
                    T.writes(C[(vi % 8) * 4 + vj // 2, (vi // 8) * 2 + vj % 2])
                    C[(vi % 8) * 4 + vj // 2, (vi // 8) * 2 + vj % 2] = T.Cast(
                        "int32", T.Cast(word, C[(vi % 8) * 4 + vj // 2, (vi // 8) * 2 + vj % 2])
                        + T.popcount(A[vi, vk] & B[vj, vk]))

    @T.prim_func(s_tir=True)
    def mma_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int64()
        sb = T.int64()
        A = T.match_buffer(a, (16, 4), word, offset_factor=1, scope="global", strides=[sa, 1])
        B = T.match_buffer(b, (8, 4), word, offset_factor=1, scope="global", strides=[sb, 1])
        C = T.match_buffer(c, (32, 4), "int32", offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(C[0:32, 0:4], A[0:16, 0:4], B[0:8, 0:4])
            T.writes(C[0:32, 0:4])
            for lane in T.thread_binding(32, thread="threadIdx.x"):
                # lane 4 g + t: the low / high half of word t of row g (g + 8) and of column g; see
                # bmma_and_popc_probe for why one word per lane and operand is a valid k-bit order
                fa = T.alloc_buffer((4,), "uint32", scope="local")
                fb = T.alloc_buffer((2,), "uint32", scope="local")
                fa[0] = T.Cast("uint32", A[lane // 4, lane % 4] & T.uint64(0xFFFFFFFF))
                fa[1] = T.Cast("uint32", A[lane // 4 + 8, lane % 4] & T.uint64(0xFFFFFFFF))
                fa[2] = T.Cast("uint32", A[lane // 4, lane % 4] >> T.uint64(32))
                fa[3] = T.Cast("uint32", A[lane // 4 + 8, lane % 4] >> T.uint64(32))
                fb[0] = T.Cast("uint32", B[lane // 4, lane % 4] & T.uint64(0xFFFFFFFF))
                fb[1] = T.Cast("uint32", B[lane // 4, lane % 4] >> T.uint64(32))
                T.evaluate(T.ptx_legacy.mma("m16n8k256", "row", "col", "int1", "int1", "int32",
                                            fa.data, 0, fb.data, 0, C.data, C.elem_offset + lane * 4, False,
                                            "and", dtype="int32"))

    @T.prim_func(s_tir=True)
    def mma_emulated(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int64()
        sb = T.int64()
        A = T.match_buffer(a, (16, 4), word, offset_factor=1, scope="global", strides=[sa, 1])
        B = T.match_buffer(b, (8, 4), word, offset_factor=1, scope="global", strides=[sb, 1])
        C = T.match_buffer(c, (32, 4), "int32", offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(C[0:32, 0:4], A[0:16, 0:4], B[0:8, 0:4])
            T.writes(C[0:32, 0:4])
            for lane in T.thread_binding(32, thread="threadIdx.x"):
                for r, k in T.grid(4, 4):
                    C[lane, r] = C[lane, r] + T.Cast("int32", T.popcount(
                        A[lane // 4 + (r // 2) * 8, k] & B[(lane % 4) * 2 + r % 2, k]))

    @T.prim_func(s_tir=True)
    def fill_desc(c: T.handle) -> None:
        C = T.match_buffer(c, (32, 4), "int32", offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:32, 0:4])
            for i, j in T.grid(16, 8):
                with T.sblock("init"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    T.reads()
                    T.writes(C[(vi % 8) * 4 + vj // 2, (vi // 8) * 2 + vj % 2])
                    C[(vi % 8) * 4 + vj // 2, (vi // 8) * 2 + vj % 2] = 0

    @T.prim_func(s_tir=True)
    def fill_impl(c: T.handle) -> None:
        C = T.match_buffer(c, (32, 4), "int32", offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:32, 0:4])
            for lane in T.thread_binding(32, thread="threadIdx.x"):  # noqa: B007 - TVMScript: the loop binds the thread axis
                T.evaluate(T.cuda.mma_fill_legacy(4, C.data, C.elem_offset, dtype="int32"))

    @T.prim_func(s_tir=True)
    def fill_emulated(c: T.handle) -> None:
        C = T.match_buffer(c, (32, 4), "int32", offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:32, 0:4])
            for lane in T.thread_binding(32, thread="threadIdx.x"):
                for r in range(4):
                    C[lane, r] = 0

    @T.prim_func(s_tir=True)
    def store_desc(w: T.handle, c: T.handle) -> None:
        W = T.match_buffer(w, (32, 4), "int32", offset_factor=1, scope="warp")
        C = T.match_buffer(c, (16, 8), "int32", offset_factor=1, scope="global")
        with T.sblock("root"):
            T.reads(W[0:32, 0:4])
            T.writes(C[0:16, 0:8])
            for i, j in T.grid(16, 8):
                with T.sblock("store"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    T.reads(W[(vi % 8) * 4 + vj // 2, (vi // 8) * 2 + vj % 2])
                    T.writes(C[vi, vj])
                    C[vi, vj] = W[(vi % 8) * 4 + vj // 2, (vi // 8) * 2 + vj % 2]

    @T.prim_func(s_tir=True)
    def store_impl(w: T.handle, c: T.handle) -> None:
        s0 = T.int64()
        W = T.match_buffer(w, (32, 4), "int32", offset_factor=1, scope="warp")
        C = T.match_buffer(c, (16, 8), "int32", offset_factor=1, scope="global", strides=[s0, 1])
        with T.sblock("root"):
            T.reads(W[0:32, 0:4])
            T.writes(C[0:16, 0:8])
            for lane in T.thread_binding(32, thread="threadIdx.x"):
                for r in range(4):
                    C[lane // 4 + (r // 2) * 8, (lane % 4) * 2 + r % 2] = W[lane, r]

    for name, desc, impl, emulated in ((INTRIN_MMA, mma_desc, mma_impl, mma_emulated),
                                       (INTRIN_FILL, fill_desc, fill_impl, fill_emulated),
                                       (INTRIN_STORE, store_desc, store_impl, store_impl)):
        TensorIntrin.register(name, desc, impl, override=True)
        TensorIntrin.register(name + EMULATED, desc, emulated, override=True)


def _sm_version(target: Target) -> int:
    arch = str(target.attrs.get("arch", ""))
    digits = "".join(ch for ch in arch.partition("_")[2] if ch.isdigit())
    return int(digits) if digits else 0


def tensor_cores_enabled() -> bool:
    return os.environ.get(TENSOR_CORE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class BitSerialTensorCoreCUDA(ScheduleRule):
    """Opt-in (PATVM_CUDA_TENSOR_CORES=1, sm_80+): the integer counts of a bit-serial conv as one b1 GEMM
    on tensor cores, `mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc`.

    The counts block is normalised to a GEMM the way dlight's tensor-core rules do it (`reindex` +
    `transform_layout`): rows = (n, oh, ow, activation plane), columns = (weight plane, output channel),
    k = (kh, kw, channel word); so all NW x NA plane pairs come out of one GEMM. The im2col of the padded
    activation words and the re-laid-out weights are materialised by two spatial kernels, padded with
    zero words to multiples of the 16 x 8 x 4-word tile (zero words add nothing to a popcount). One warp
    per 16 x 8 output tile keeps its counts in an MMA accumulator fragment over the k loop and stores them
    once; the phi combine and the output (with the fused epilogue) are spatial kernels.
    Any failure (a shape the normalisation does not cover) falls back to `BitSerialCUDA`."""

    def __init__(self, emulate: bool = False, min_sm: int = 80):
        self.emulate = emulate
        self.min_sm = min_sm
        _register_b1_intrinsics()

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not _is_cuda(target) or _sm_version(target) < self.min_sm:
            return None
        names = block_names(s_tir.Schedule(func))
        if CONV_BLOCK not in names or COUNT_BLOCK not in names:
            return None
        try:
            return self._schedule(func, target)
        except Exception as exc:  # noqa: BLE001 - a shape the normalisation does not cover: popcount kernel
            logger.warning("b1 tensor-core schedule does not apply (%s); using the __popcll kernel",
                           str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__)
            return None

    def _intrin(self, name: str) -> str:
        return name + EMULATED if self.emulate else name

    def _schedule(self, func: tirx.PrimFunc, target: Target):
        from tvm.s_tir.dlight.gpu.matmul import get_index_map

        sch = s_tir.Schedule(func)
        sch.unsafe_set_dtype(COUNT_BLOCK, 0, "int32")      # the MMA accumulator type; exact
        counts = sch.get_sblock(COUNT_BLOCK)
        # 1. the counts as C[0, I, J] += popcount(A[0, I, K] & B[0, J, K])
        reindex_a = sch.reindex(counts, ("read", 0))
        reindex_b = sch.reindex(counts, ("read", 1))
        reindex_c = sch.reindex(counts, ("write", 0))
        maps = get_index_map(sch.get(counts))
        if maps is None:
            raise ValueError("the counts block is not a GEMM after reindexing")
        matmul_map, a_map, b_map, c_map = maps
        sch.transform_layout(reindex_a, ("write", 0), a_map)
        sch.transform_layout(reindex_b, ("write", 0), b_map)
        sch.transform_layout(reindex_c, ("read", 0), c_map)
        sch.transform_block_layout(counts, matmul_map)
        sch.pad_einsum(counts, [1, *BMMA_SHAPE])
        # 2. operands: pad + im2col + zero padding in one kernel each; the C copies inlined into the combine
        operands = list(sch.get_producers(counts))
        for operand in operands:
            _inline_producers(sch, operand)
        consumer = sch.get_consumers(counts)
        while len(consumer) == 1 and sch.get(consumer[0]).name_hint != CONV_BLOCK:
            sch.compute_inline(consumer[0])
            consumer = sch.get_consumers(counts)
        operand_names = [sch.get(b).name_hint for b in operands]
        last = block_names(sch)[-1]
        inline_all_except(sch, {COUNT_BLOCK, CONV_BLOCK, last, *operand_names})
        # 3. the GEMM: one warp per 16 x 8 tile, k by 4 words
        counts = sch.get_sblock(COUNT_BLOCK)
        batch, i, j, k = sch.get_loops(counts)
        io, ii = sch.split(i, [None, BMMA_SHAPE[0]])
        jo, ji = sch.split(j, [None, BMMA_SHAPE[1]])
        ko, ki = sch.split(k, [None, BMMA_SHAPE[2]])
        sch.reorder(batch, io, jo, ko, ii, ji, ki)
        sch.bind(sch.fuse(batch, io), "blockIdx.x")
        sch.bind(jo, "blockIdx.y")
        store = sch.cache_write(counts, 0, "warp")
        sch.reverse_compute_at(store, jo)
        sch.transform_layout(counts, ("write", 0), lambda b, i_, j_: (
            b, i_ // 16, j_ // 8, (i_ % 8) * 4 + (j_ % 8) // 2, ((i_ % 16) // 8) * 2 + j_ % 2))
        init = sch.decompose_reduction(counts, ko)
        tiles = [sch.get(block).name_hint for block in (init, store, counts)]
        # the init value is Cast("int32", uint64(0)) after unsafe_set_dtype; the fill pattern has it folded
        sch = s_tir.Schedule(s_tir.transform.StmtSimplify()(sch.mod))
        init, store, counts = (sch.get_sblock(name) for name in tiles)
        sch.tensorize(sch.get_loops(init)[-2], self._intrin(INTRIN_FILL))
        sch.tensorize(sch.get_loops(store)[-2], self._intrin(INTRIN_STORE))
        sch.tensorize(sch.get_loops(counts)[-3], self._intrin(INTRIN_MMA))
        # 4. everything else: spatial kernels
        max_threads = _max_threads(target)
        for name in operand_names:
            bind_spatial(sch, sch.get_sblock(name), max_threads)
        window_in_thread(sch, bind_spatial(sch, sch.get_sblock(CONV_BLOCK), max_threads))
        if last != CONV_BLOCK:
            bind_spatial(sch, sch.get_sblock(last), max_threads)
        return sch


def window_in_thread(sch: s_tir.Schedule, thread_loop) -> None:
    """The window counts and their term (ABC-Net's weight offset), in registers of the thread that
    combines the output: recomputed per output channel, as cheap as one more plane pair."""
    names = block_names(sch)
    for name in (WINDOW_TERM_BLOCK, WINDOW_BLOCK):    # consumer first: each lands above its consumer
        if name in names:
            block = sch.get_sblock(name)
            sch.compute_at(block, thread_loop)
            sch.set_scope(block, 0, "local")


def _inline_producers(sch: s_tir.Schedule, block) -> None:
    """Inline every producer chain of `block` (pad, reindex copies) into it."""
    changed = True
    while changed:
        changed = False
        for producer in sch.get_producers(block):
            try:
                sch.compute_inline(producer)
                changed = True
            except Exception:  # noqa: BLE001 - not inlinable: leave it
                continue


def bmma_and_popc_probe():
    """One warp computes C[m, n] = sum_k popcount(A[m, k] & B[n, k]) for A [16, 4] and B [8, 4] uint64
    words with one `mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc` (sm_80+), emitted by TVM
    0.27's `T.ptx_legacy.mma` with the data types spelled "int1" ("b1" is rejected by its PTX codegen)
    and the bit operation "and".

    Fragments (PTX ISA, mma.m16n8k256 .b1): lane = 4 g + t holds a0/a2 = row g, k bits [32 t, 32 t + 32)
    and [128 + 32 t, ...), a1/a3 the same for row g + 8, b0/b1 the same k bits of column g, and c0..c3 =
    C[g, 2 t], C[g, 2 t + 1], C[g + 8, 2 t], C[g + 8, 2 t + 1]. A sum of popcounts does not depend on the
    order of the k bits as long as A and B use the same one, so the lane feeds the low and high halves of
    its one word A[g, t] (resp. B[g, t]) as a0 and a2 (b0 and b1): no shuffles, no ldmatrix.
    """
    from tvm.script import tirx as T

    @T.prim_func
    def bmma_probe(A: T.Buffer((16, 4), "uint64"), B: T.Buffer((8, 4), "uint64"),
                   C: T.Buffer((16, 8), "int32")):
        T.func_attr({"global_symbol": "bmma_probe", "tirx.noalias": True})
        for bx in T.thread_binding(1, thread="blockIdx.x"):  # noqa: B007 - TVMScript: the loop binds the thread axis
            for lane in T.thread_binding(32, thread="threadIdx.x"):
                a = T.alloc_buffer((4,), "uint32", scope="local")
                b = T.alloc_buffer((2,), "uint32", scope="local")
                c = T.alloc_buffer((4,), "int32", scope="local")
                a[0] = T.Cast("uint32", A[lane // 4, lane % 4] & T.uint64(0xFFFFFFFF))
                a[1] = T.Cast("uint32", A[lane // 4 + 8, lane % 4] & T.uint64(0xFFFFFFFF))
                a[2] = T.Cast("uint32", A[lane // 4, lane % 4] >> T.uint64(32))
                a[3] = T.Cast("uint32", A[lane // 4 + 8, lane % 4] >> T.uint64(32))
                b[0] = T.Cast("uint32", B[lane // 4, lane % 4] & T.uint64(0xFFFFFFFF))
                b[1] = T.Cast("uint32", B[lane // 4, lane % 4] >> T.uint64(32))
                for r in range(4):
                    c[r] = 0
                T.evaluate(T.ptx_legacy.mma("m16n8k256", "row", "col", "int1", "int1", "int32",
                                            a.data, 0, b.data, 0, c.data, 0, False, "and", dtype="int32"))
                C[lane // 4, lane % 4 * 2] = c[0]
                C[lane // 4, lane % 4 * 2 + 1] = c[1]
                C[lane // 4 + 8, lane % 4 * 2] = c[2]
                C[lane // 4 + 8, lane % 4 * 2 + 1] = c[3]

    return bmma_probe
