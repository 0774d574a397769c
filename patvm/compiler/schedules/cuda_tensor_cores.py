"""The b1 tensor-core path of the CUDA schedules (sm_80+, opt-in: PATVM_CUDA_TENSOR_CORES=1): the integer
counts of a bit-serial conv as one GEMM of `mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc`,
through tensor intrinsics registered here (and serial twins of them that run on a CPU). docs/cuda.md,
"Tensor cores"."""
from __future__ import annotations

import logging
import os

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from patvm.compiler.ops.bitserial import CONV_BLOCK, COUNT_BLOCK
from patvm.compiler.schedules.common import block_names, inline_all_except
from patvm.compiler.schedules.cuda_threads import bind_spatial, is_cuda, target_max_threads, window_in_thread
from patvm.errors import last_line

logger = logging.getLogger(__name__)

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

    The MMA is TVM 0.27's `T.ptx_legacy.mma` with the data types spelled "int1" ("b1" is rejected by its
    PTX codegen) and the bit operation "and". Its operand fragments (PTX ISA, mma.m16n8k256 .b1): lane
    4 g + t holds a0/a2 = row g, k bits [32 t, 32 t + 32) and [128 + 32 t, ...), a1/a3 the same for row
    g + 8, b0/b1 the same k bits of column g. A sum of popcounts does not depend on the order of the k bits
    as long as A and B use the same one, so the lane feeds the low and high halves of its one word A[g, t]
    (resp. B[g, t]) as a0 and a2 (b0 and b1): no shuffles, no ldmatrix. (tests/targets/b1_mma_probe.py
    is this MMA alone, run on a GPU against numpy.)

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
                # lane 4 g + t: the low / high half of word t of row g (g + 8) and of column g (any k-bit
                # order shared by A and B gives the same popcount sum: the docstring above)
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
        if not isinstance(func, tirx.PrimFunc) or not is_cuda(target) or _sm_version(target) < self.min_sm:
            return None
        names = block_names(s_tir.Schedule(func))
        if CONV_BLOCK not in names or COUNT_BLOCK not in names:
            return None
        try:
            return self._schedule(func, target)
        except Exception as exc:  # noqa: BLE001 - a shape the normalisation does not cover: popcount kernel
            logger.warning("b1 tensor-core schedule does not apply (%s); using the __popcll kernel",
                           last_line(exc, 200))
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
        max_threads = target_max_threads(target)
        for name in operand_names:
            bind_spatial(sch, sch.get_sblock(name), max_threads)
        window_in_thread(sch, bind_spatial(sch, sch.get_sblock(CONV_BLOCK), max_threads))
        if last != CONV_BLOCK:
            bind_spatial(sch, sch.get_sblock(last), max_threads)
        return sch


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
