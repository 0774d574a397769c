"""Thread binding shared by patvm's CUDA schedules (`cuda`, `cuda_tensor_cores`): spatial loops fused and
split over (blockIdx.x, threadIdx.x), reductions serial in each thread; ABC-Net's window counts placed in
the thread that combines an output."""
from __future__ import annotations

import logging

from tvm import s_tir, tirx
from tvm.target import Target

from patvm.compiler.ops.bitserial import WINDOW_BLOCK, WINDOW_TERM_BLOCK
from patvm.compiler.schedules.common import block_names, loop_extent
from patvm.errors import last_line

logger = logging.getLogger(__name__)


def is_cuda(target: Target) -> bool:
    return target.kind.name == "cuda"


def target_max_threads(target: Target) -> int:
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


def try_decompose_reduction(sch: s_tir.Schedule, block, loop) -> None:
    """Split the init of a reduction off before `loop`. After a thread split whose tail needs a predicate
    TVM may no longer see the bindings as quasi-affine and refuses; then the block keeps its init, which
    lowers to `if (first reduction step) acc = init` inside the loop: the same result (and free once the
    loop is unrolled)."""
    try:
        sch.decompose_reduction(block, loop)
    except s_tir.ScheduleError as exc:
        logger.debug("decompose_reduction refused, init stays in the loop: %s", last_line(exc))


def window_in_thread(sch: s_tir.Schedule, thread_loop) -> None:
    """The window counts and their term (a weight offset's, ABC-Net), in registers of the thread that
    combines the output: recomputed per output channel, as cheap as one more plane pair."""
    names = block_names(sch)
    for name in (WINDOW_TERM_BLOCK, WINDOW_BLOCK):    # consumer first: each lands above its consumer
        if name in names:
            block = sch.get_sblock(name)
            sch.compute_at(block, thread_loop)
            sch.set_scope(block, 0, "local")
