"""Hand schedules for NVIDIA GPUs (target kind "cuda"), as dlight ScheduleRules.

`BitSerialCUDA` (PrimFuncs with the "bitserial_conv" block): one thread per output value (pixel x output
channel); the output channels vary fastest across the threads of a warp, so the weight words
(`[KH, KW, NW, CW, O]`, O innermost) are read coalesced and the activation word is one broadcast load.
Each thread ANDs 64-bit words and `__popcll`s them into per-plane-pair integer counters held in
registers ("local"), then forms the phi-weighted sum (also in a register). Without correction terms the
NCHW output, with the fused epilogue (bias, ReLU, residual add, ...) inlined into it, is written by the
same thread right after; with correction terms ("window_count", "base_level_term") these are small
spatial kernels of their own and the output is a following elementwise kernel. The pad is inlined (a
select on the load).

`PackActivationCUDA` (the thermometer packer): one thread per output word, with the image column `w`
fastest across threads so that the float loads `X[n, c, h, w]` are coalesced; the 64-bit OR reduction
runs serially (unrolled) in each thread.

Every other PrimFunc (fp32 first/last layers, depthwise convs, pooling, dense, softmax, elementwise)
goes to TVM's own dlight GPU rules: Matmul, GEMV, Reduction, GeneralReduction, then Fallback (which binds
any loop nest; every PrimFunc must carry thread bindings or the CUDA build fails with "did you forget to
bind?").

`BitSerialTensorCoreCUDA` (optional, see docs/cuda.md): see the notes there on b1 MMA.
"""
from __future__ import annotations

import logging
import os
import shutil

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from patvm.compiler.ops.bitserial import CONV_BLOCK, COUNT_BLOCK

PACK_BLOCK = "pack_activation_planes"
SIDE_BLOCKS = ("window_count", "base_level_term")
logger = logging.getLogger(__name__)


def _is_cuda(target: Target) -> bool:
    return target.kind.name == "cuda"


def _max_threads(target: Target) -> int:
    return int(target.attrs.get("max_num_threads", 1024) or 1024)


def block_names(sch: s_tir.Schedule) -> list[str]:
    return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]


def _extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _inline_all_except(sch: s_tir.Schedule, keep: set[str]) -> None:
    """Inline every injective block not in `keep` (pads, transposes, elementwise epilogues)."""
    changed = True
    while changed:
        changed = False
        for name in block_names(sch):
            if name in keep:
                continue
            block = sch.get_sblock(name)
            for inline in (sch.compute_inline, sch.reverse_compute_inline):
                try:
                    inline(block)
                    changed = True
                    break
                except Exception:  # noqa: BLE001 - not inlinable this way: try the other, or keep it
                    continue
            if changed:
                break


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
    threads = _threads_for(_extent(sch, fused), max_threads, preferred)
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    if reduce:
        sch.decompose_reduction(block, reduce[0])
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
    assert [_extent(sch, lp) for lp in below] == expected, "unexpected loop nest below the thread loop"
    return below[:kept_planes], below[kept_planes:]


class BitSerialCUDA(ScheduleRule):
    """One thread per (output pixel, output channel); see the module docstring."""

    def __init__(self, threads: int = 128):
        self.threads = threads

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not _is_cuda(target):
            return None
        sch = s_tir.Schedule(func)
        names = block_names(sch)
        if CONV_BLOCK not in names or COUNT_BLOCK not in names:
            return None
        side = [name for name in SIDE_BLOCKS if name in names]
        last = names[-1]
        _inline_all_except(sch, {COUNT_BLOCK, CONV_BLOCK, last, *side})

        conv = sch.get_sblock(CONV_BLOCK)
        counts = sch.get_sblock(COUNT_BLOCK)
        n, oh, ow, o, i, _j = sch.get_loops(conv)
        # threads: o_tile output channels (fastest: coalesced weight words) x p_tile output pixels;
        # blocks: (pixel tiles, channel tiles). o_tile divides O, so only the pixel split has a tail.
        max_threads = min(self.threads, _max_threads(target))
        n_out = _extent(sch, o)
        o_tile = max(d for d in range(1, min(n_out, max_threads) + 1) if n_out % d == 0)
        pixels = sch.fuse(n, oh, ow)
        p_tile = max(1, min(max_threads // o_tile, _extent(sch, pixels)))
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
            sch.decompose_reduction(counts, reduce_loops[0])
        for loop in plane_loops:
            sch.unroll(loop)
        for loop in sch.get_loops(conv)[2:]:    # the phi combine over (i, j): unrolled
            sch.unroll(loop)
        if side:
            # correction terms: simple spatial kernels; the output (with the epilogue) after them
            sch.decompose_reduction(conv, i)
            for name in side:
                bind_spatial(sch, sch.get_sblock(name), _max_threads(target))
            if last != CONV_BLOCK:
                bind_spatial(sch, sch.get_sblock(last), _max_threads(target))
        else:
            if last != CONV_BLOCK:
                sch.set_scope(conv, 0, "local")
                sch.reverse_compute_at(sch.get_sblock(last), tx)
            sch.decompose_reduction(conv, i)
        return sch


class PackActivationCUDA(ScheduleRule):
    """The thermometer packer: one thread per output word, w fastest (coalesced float loads)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not _is_cuda(target):
            return None
        sch = s_tir.Schedule(func)
        names = block_names(sch)
        if PACK_BLOCK not in names:
            return None
        _inline_all_except(sch, {PACK_BLOCK})
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
        sch.decompose_reduction(block, bits)
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


def cuda_rules() -> list:
    """The rules for family "cuda", in the order dlight tries them (the first that applies wins)."""
    use_nvcc_without_nvrtc()
    gpu = dlight.gpu
    return [
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
    """The CUDA C source of a built module: an Executable, its `.mod`, or any runtime module. The CUDA
    module sits two levels down (VM executable -> llvm host module -> cuda), so walk all imports."""
    root = getattr(module, "mod", module)
    texts, stack, seen = [], [root], set()
    while stack:
        mod = stack.pop()
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        if mod.kind == "cuda":
            texts.append(mod.inspect_source("cuda"))
        stack.extend(reversed(list(mod.imports)))
    return "\n".join(texts)


# ---- b1 tensor cores: the building block, not a schedule rule (see docs/cuda.md, "Tensor cores")

BMMA_SHAPE = (16, 8, 4)   # m16n8k256: 16 rows x 8 columns, k = 256 bits = 4 uint64 words


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
        for bx in T.thread_binding(1, thread="blockIdx.x"):
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
