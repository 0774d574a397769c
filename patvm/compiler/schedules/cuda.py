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

`BitSerialTensorCoreCUDA` (opt-in: PATVM_CUDA_TENSOR_CORES=1, sm_80+; `cuda_tensor_cores`) computes the
integer counts as one b1 GEMM on tensor cores. docs/cuda.md describes both paths and what has been verified
without a GPU.
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
from patvm.compiler.schedules.cuda_tensor_cores import BitSerialTensorCoreCUDA, tensor_cores_enabled
from patvm.compiler.schedules.cuda_threads import (
    bind_spatial,
    is_cuda,
    target_max_threads,
    try_decompose_reduction,
    window_in_thread,
)
from patvm.errors import last_line

logger = logging.getLogger(__name__)


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


class _SafeRule(ScheduleRule):
    """A hand rule that must never break the build: if it throws on a shape it was not written for, the
    PrimFunc gets dlight's Fallback (every block bound, correct, slow) and a warning says so."""

    def matches(self, func: tirx.PrimFunc, target: Target) -> bool:
        raise NotImplementedError

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
        raise NotImplementedError

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cuda(target) or not self.matches(func, target):
            return None
        try:
            return self.schedule(func, target)
        except Exception as exc:  # noqa: BLE001 - any failure: the generic, correct schedule instead
            logger.warning("%s failed (%s); using dlight's Fallback schedule", type(self).__name__,
                           last_line(exc, 200))
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
        max_threads = min(self.threads, target_max_threads(target))
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
        max_threads = target_max_threads(target)
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
        if not isinstance(func, tirx.PrimFunc) or not is_cuda(target):
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
