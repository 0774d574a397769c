"""Hand schedules for CPUs (x86 and ARM), as dlight ScheduleRules applied to the fused PrimFuncs.

The bit-serial conv (anchor block "bitserial_conv") is register-blocked over `ow_tile` output pixels x
`o_tile` output channels, with the output channels innermost and vectorised: each step loads o_tile
weight words and ANDs them with one activation word broadcast, then popcounts (vpopcntq on AVX-512
VPOPCNTDQ, cnt.16b + pairwise adds on NEON, a scalar/LUT sequence on AVX2). Epilogue blocks are inlined
into the output block, which runs after the conv inside the same parallel row loop; when the next layer's
packer is fused in (patvm.compiler.fuse_packing), its row loop is merged into that one: conv row, epilogue,
pack, while the row is in cache.

fp32 convs and depthwise convs in the blocked layout get `Conv2dBlockedCPU` (a register tile of output
pixels x an output-channel block); other fp32 functions (pooling, FC, layout transforms) get `GenericCPU`:
parallel outer loops and a vectorised inner spatial loop. MetaSchedule replaces all of these where records
exist.
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from patvm.compiler.ops.bitserial import CONV_BLOCK, COUNT_BLOCK, WINDOW_BLOCK, WINDOW_TERM_BLOCK
from patvm.compiler.ops.conv2d_blocked import CONV_BLOCK as BLOCKED_CONV_BLOCK
from patvm.compiler.ops.conv2d_blocked import (
    DEPTHWISE_BLOCK,
    DEPTHWISE_NCHW_BLOCK,
    register_tile,
    vector_shape,
)
from patvm.compiler.ops.conv2d_blocked import PAD_BLOCK as BLOCKED_PAD_BLOCK
from patvm.compiler.ops.packing import PACK_BLOCK
from patvm.compiler.schedules.common import block_names, inline_all_except, loop_extent


def largest_divisor(n: int, candidates: tuple[int, ...]) -> int:
    return next((c for c in candidates if n % c == 0), 1)


def vector_lanes_u64(target: Target) -> int:
    """uint64 lanes of the widest vector register the target has (AVX-512: 8, AVX2/NEON: 4/2)."""
    from tvm.target import codegen
    if target.kind.name == "llvm" and "aarch64" not in str(target.attrs.get("mtriple", "")):
        if codegen.llvm_cpu_has_features("avx512f", target):
            return 8
        return 4
    return 2






def _parallel_outer(sch: s_tir.Schedule, block, spatial_count: int, cores: int) -> None:
    loops = sch.get_loops(block)[:spatial_count]
    if not loops:
        return
    fused, extent = [loops[0]], loop_extent(sch, loops[0])
    for loop in loops[1:]:
        if extent >= 4 * cores:
            break
        fused.append(loop)
        extent *= loop_extent(sch, loop)
    sch.parallel(sch.fuse(*fused) if len(fused) > 1 else fused[0])


def _loops_below(sch: s_tir.Schedule, block, loop) -> list:
    """The loops of `block` nested inside `loop`."""
    loops, anchor = sch.get_loops(block), sch.get_sref(loop)
    return loops[next(k for k, lp in enumerate(loops) if sch.get_sref(lp).same_as(anchor)) + 1:]


def _tile_loops(sch: s_tir.Schedule, block, extents: dict[str, int], start_after) -> dict:
    """Name the loops of `block` below `start_after` after a compute_at, which drops unit-extent loops:
    the remaining loops follow `extents` (name -> tile extent, in loop order), one per extent > 1."""
    below = _loops_below(sch, block, start_after)
    kept = [name for name, extent in extents.items() if extent > 1]
    assert [loop_extent(sch, lp) for lp in below] == [extents[k] for k in kept], "unexpected loop nest"
    return dict(zip(kept, below))


def _decompose_below(sch: s_tir.Schedule, block) -> None:
    """Split the init off a reduction block placed by compute_at (its non-unit reductions innermost)."""
    loops = sch.get_loops(block)
    reductions = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type != 0 and int(iv.dom.extent) > 1)
    if reductions:
        sch.decompose_reduction(block, loops[len(loops) - reductions])


def _cores(target: Target) -> int:
    return int(target.attrs.get("num-cores", 2) or 2)


def _vectorize_pack(sch: s_tir.Schedule, block, target: Target) -> None:
    """The packer's innermost loops (w, j, cw, k): the words of a vector of neighbouring pixels built at
    once in registers (contiguous NCHW loads along w, one threshold broadcast per bit), then stored; one
    word at a time would be 64 loads strided over channels."""
    w, j, cw, k = sch.get_loops(block)[-4:]
    lanes = vector_lanes_u64(target)
    width = largest_divisor(loop_extent(sch, w), (2 * lanes, lanes, 7, 4, 2))
    if width == 1:
        return
    wo, wi = sch.split(w, [None, width])
    sch.reorder(wo, j, cw, k, wi)
    local = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(local, cw)
    sch.vectorize(sch.get_loops(local)[-1])
    sch.vectorize(wi)   # before the init is split off: a bare update fails the dataflow check
    sch.decompose_reduction(block, k)


class BitSerialCPU(ScheduleRule):
    """Register-blocked, vectorised bit-serial conv; see the module docstring."""

    def __init__(self, ow_tiles=(4, 7, 2, 1), o_tiles=None):
        self.ow_tiles = ow_tiles
        self.o_tiles = o_tiles

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        names = block_names(sch)
        if CONV_BLOCK not in names:
            return None
        pack = PACK_BLOCK if PACK_BLOCK in names else None       # the next layer's packer, fused (fuse_packing)
        last = names[-2] if pack else names[-1]                  # the float output, epilogue inlined into it
        window_blocks = [b for b in (WINDOW_BLOCK, WINDOW_TERM_BLOCK) if b in names]
        kept = self._kept_blocks(names) | set(window_blocks)
        inline_all_except(sch, {COUNT_BLOCK, CONV_BLOCK, last} | ({pack} if pack else set()) | kept)
        # between the conv and the packer: the float output, and before it the kernel's float output that a
        # residual add reads when fuse_packing moved a ReLU in (an output block cannot be inlined)
        epilogue = [b for b in block_names(sch) if b not in {COUNT_BLOCK, CONV_BLOCK, pack} | kept]
        conv = sch.get_sblock(CONV_BLOCK)
        counts = sch.get_sblock(COUNT_BLOCK)
        _, _, ow_, o_, nw, na = (int(iv.dom.extent) for iv in sch.get(conv).iter_vars)
        ow_tile, o_tile = self._tiles(ow_, o_, target)
        n, oh, ow, o, i, j = sch.get_loops(conv)
        owo, owi = sch.split(ow, [None, ow_tile])
        oo, oi = sch.split(o, [None, o_tile])
        sch.reorder(owo, oo, i, j, owi, oi)
        row = sch.fuse(n, oh)
        # integer counts of one (ow_tile x o_tile) tile for all plane pairs, kept in registers / L1
        sch.compute_at(counts, oo)
        k_h, k_w, c_w = (int(iv.dom.extent) for iv in sch.get(counts).iter_vars[6:])
        tile = _tile_loops(sch, counts, {"ow": ow_tile, "i": nw, "j": na, "o": o_tile, "kh": k_h, "kw": k_w,
                                         "cw": c_w}, start_after=oo)
        order = [tile[k] for k in ("i", "j", "kh", "kw", "cw", "ow", "o") if k in tile]
        if len(order) > 1:
            sch.reorder(*order)
        self._schedule_count_tile(sch, tile, o_tile)
        for name in reversed(window_blocks):   # the window term of the tile's pixels, once for all channels
            sch.compute_at(sch.get_sblock(name), owo)
        if o_tile > 1:
            sch.vectorize(oi)
        pack_rows = sch.fuse(*sch.get_loops(sch.get_sblock(pack))[:2]) if pack else None   # its (n, h)
        # per register tile, right after its conv: the epilogue, writing the tile's NCHW outputs from registers
        # (a whole row's would be a strided scalar transpose, the costliest part of a 1x1 conv); then per
        # output row the next layer's packer
        for name in epilogue:
            block = sch.get_sblock(name)
            sch.reverse_compute_at(block, oo)
            for loop in _loops_below(sch, block, oo):
                sch.unroll(loop)
        if pack:
            row = sch.merge(row, pack_rows)
        sch.parallel(row)
        if pack:   # after parallel, as every decompose_reduction here
            _vectorize_pack(sch, sch.get_sblock(pack), target)
        first_reduction = next((tile[k] for k in ("kh", "kw", "cw") if k in tile), None)
        if first_reduction is not None:  # after parallel: the init blocks would break its dataflow check
            sch.decompose_reduction(counts, first_reduction)
        sch.decompose_reduction(conv, i)
        for name in window_blocks:
            _decompose_below(sch, sch.get_sblock(name))
        self._finish(sch, counts, tile, target)
        return sch

    # ---- what a target-specific subclass (schedules.arm.BitSerialNEON) replaces
    def _kept_blocks(self, names: list[str]) -> set[str]:
        """Blocks kept as loop nests of their own besides the conv's (here none: the pad is inlined)."""
        return set()

    def _tiles(self, ow_: int, o_: int, target: Target) -> tuple[int, int]:
        """(output pixels, output channels) of one register tile."""
        lanes = vector_lanes_u64(target)
        return largest_divisor(ow_, self.ow_tiles), largest_divisor(o_, self.o_tiles or (2 * lanes, lanes, 4, 2))

    def _schedule_count_tile(self, sch: s_tir.Schedule, tile: dict, o_tile: int) -> None:
        """The counts of one tile: pixels unrolled, output channels vectorised."""
        if "ow" in tile:
            sch.unroll(tile["ow"])
        if o_tile > 1:
            sch.vectorize(tile["o"])

    def _finish(self, sch: s_tir.Schedule, counts, tile: dict, target: Target) -> None:
        """Last steps after the reductions are decomposed (nothing here)."""


class PackActivationCPU(ScheduleRule):
    """The packer: parallel over (n, h), a vector of pixels' words per step (_vectorize_pack)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        if PACK_BLOCK not in block_names(sch):
            return None
        block = sch.get_sblock(PACK_BLOCK)
        _parallel_outer(sch, block, 2, _cores(target))
        _vectorize_pack(sch, block, target)
        return sch


SMALL_OUTPUT_SLICE = 16 * 1024   # bytes of one tile column's output (all rows) that stay in L1 with their inputs


class Conv2dBlockedCPU(ScheduleRule):
    """fp32 conv2d and depthwise conv2d in the blocked layout (patvm.compiler.ops.conv2d_blocked): per
    (n, output blocks, output row), register tiles of ow_tile pixels x ob_tile output blocks
    (register_tile), accumulated in vector registers (output channels vectorised, pixels and blocks
    unrolled) over the reduction (input blocks, kernel rows and columns, the channels of a block; for
    depthwise, kernel rows and columns); a small output is computed input block by input block for all
    its rows at once. The output block with the epilogue inlined runs right after its row (or rows), while
    they are in cache."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        names = block_names(sch)
        anchor = next((b for b in (BLOCKED_CONV_BLOCK, DEPTHWISE_BLOCK) if b in names), None)
        if anchor is None:
            return None
        last = names[-1]
        inline_all_except(sch, {BLOCKED_PAD_BLOCK, anchor, last})
        cores = _cores(target)
        if BLOCKED_PAD_BLOCK in block_names(sch):
            _parallel_outer(sch, sch.get_sblock(BLOCKED_PAD_BLOCK), 3, cores)
        conv = sch.get_sblock(anchor)
        (n, ob, oh, ow, oi), reduction = sch.get_loops(conv)[:5], sch.get_loops(conv)[5:]
        lanes, registers = vector_shape(target)
        ow_tile, ob_tile = register_tile(loop_extent(sch, ow), loop_extent(sch, ob), lanes, registers,
                                         loop_extent(sch, oi), depthwise=anchor == DEPTHWISE_BLOCK)
        output_slice = loop_extent(sch, oh) * loop_extent(sch, ow) * ob_tile * loop_extent(sch, oi) * 4
        obo, obi = sch.split(ob, [None, ob_tile]) if ob_tile > 1 else (ob, None)
        owo, owi = sch.split(ow, [None, ow_tile])
        in_tile = [owi, obi] if obi else [owi]   # pixels outside: LLVM loads each broadcast once for the blocks
        if anchor != DEPTHWISE_BLOCK and output_slice <= SMALL_OUTPUT_SLICE:
            # a small output (7x7): the input blocks outermost, every row's tiles accumulating into the
            # output slice (in L1; LLVM keeps a tile's accumulators in registers over its inner loops), so
            # the weights, which come from memory (9.4 MB in a 512-channel layer), arrive while all rows
            # are computed; row by row they arrive during the first row, which then waits for them
            rc, *inner = reduction
            sch.reorder(n, obo, rc, oh, owo, *inner, *in_tile, oi)
            row = sch.fuse(n, obo)
            sch.parallel(row)
        else:
            sch.reorder(n, obo, oh, owo, *reduction, *in_tile, oi)
            row = sch.fuse(n, obo, oh)
            sch.parallel(row)
            local = sch.cache_write(conv, 0, "local")
            sch.reverse_compute_at(local, owo)
            sch.vectorize(sch.get_loops(local)[-1])
        for loop in in_tile:
            sch.unroll(loop)
        sch.vectorize(oi)
        sch.decompose_reduction(conv, reduction[0])
        if last != anchor:
            output = sch.get_sblock(last)
            try:
                sch.reverse_compute_at(output, row)
            except s_tir.ScheduleError:   # an epilogue that reads other rows: a loop nest of its own
                _parallel_outer(sch, output, 3, cores)
            inner = sch.get_loops(output)[-1]
            if loop_extent(sch, inner) in (4, 8, 16, 32):
                sch.vectorize(inner)
        return sch


class DepthwiseNCHWCPU(ScheduleRule):
    """The NCHW depthwise conv (between bit-serial layers): per (n, channel), the padded plane built once
    (split by column phase for a strided conv), then each output row in vectors of neighbouring pixels,
    several vectors per step (independent FMA chains), the kernel taps unrolled, each tap one broadcast
    weight times a vector of the input row; the epilogue after the channel's plane."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        names = block_names(sch)
        if DEPTHWISE_NCHW_BLOCK not in names:
            return None
        last = names[-1]
        inline_all_except(sch, {BLOCKED_PAD_BLOCK, DEPTHWISE_NCHW_BLOCK, last})
        conv = sch.get_sblock(DEPTHWISE_NCHW_BLOCK)
        n, c, oh, ow, rh, rw = sch.get_loops(conv)
        lanes, registers = vector_shape(target)
        width = loop_extent(sch, ow)
        vector = largest_divisor(width, (lanes, lanes // 2))   # the row is padded to one of these
        chains = largest_divisor(width // vector, tuple(range(registers // 4, 1, -1)))
        owo, owt, owi = sch.split(ow, [None, chains, vector])
        sch.reorder(oh, owo, rh, rw, owt, owi)
        plane = sch.fuse(n, c)
        sch.parallel(plane)
        if BLOCKED_PAD_BLOCK in block_names(sch):
            pad = sch.get_sblock(BLOCKED_PAD_BLOCK)
            sch.compute_at(pad, plane)
            if _loops_below(sch, pad, plane):
                sch.vectorize(_loops_below(sch, pad, plane)[-1])
        local = sch.cache_write(conv, 0, "local")
        sch.reverse_compute_at(local, owo)
        for loop in (rh, rw, owt):
            sch.unroll(loop)
        sch.vectorize(owi)
        sch.vectorize(sch.get_loops(local)[-1])
        sch.decompose_reduction(conv, rh)
        if last != DEPTHWISE_NCHW_BLOCK:
            output = sch.get_sblock(last)
            sch.reverse_compute_at(output, plane)
            below = _loops_below(sch, output, plane)     # none when the output plane is one pixel
            lanes = largest_divisor(loop_extent(sch, below[-1]), (vector, 8, 4, 2)) if below else 1
            if lanes > 1:                                # the cropped row
                sch.vectorize(sch.split(below[-1], [None, lanes])[1])
        return sch


class DenseCPU(ScheduleRule):
    """fp32 matmul [M, K] x [K, N] (a classifier; the weight transposed at compile time): the reduction
    outside, a vector of output columns inside, so each weight row streams contiguously through the
    row's accumulators (in L1); column-vector by column-vector, each 32-byte strip of the weight would
    take its own cache line per row (a batch-1 FC at 2 G MAC/s). Rows of the output and chunks of columns in
    parallel."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        names = block_names(sch)
        if "matmul" not in names:
            return None
        matmul = sch.get_sblock("matmul")
        if [iv.iter_type for iv in sch.get(matmul).iter_vars] != [0, 0, 2] or len(sch.get_loops(matmul)) != 3:
            return None
        last = names[-1]
        inline_all_except(sch, {"matmul", last})
        i, j, k = sch.get_loops(matmul)
        lanes, _ = vector_shape(target)
        vector = largest_divisor(loop_extent(sch, j), (lanes, lanes // 2, 4))
        if vector == 1:
            return None
        vectors = loop_extent(sch, j) // vector
        # a batch-1 FC has one row: its columns in a few contiguous chunks, one thread each
        chunks = largest_divisor(vectors, tuple(range(4 * _cores(target), 1, -1)))
        jc, jo, ji = sch.split(j, [chunks, None, vector])
        sch.reorder(i, jc, k, jo, ji)
        rows = sch.fuse(i, jc)
        sch.parallel(rows)
        sch.vectorize(ji)
        sch.decompose_reduction(matmul, k)
        if last != "matmul":
            output = sch.get_sblock(last)
            sch.reverse_compute_at(output, rows)
            below = _loops_below(sch, output, rows)
            if below and loop_extent(sch, below[-1]) % vector == 0:
                sch.vectorize(sch.split(below[-1], [None, vector])[1])
        return sch


class Conv2dNCHWCPU(ScheduleRule):
    """fp32 direct conv2d (TOPI's "conv2d_nchw" block): a (ff_tile x ow_tile) register block per step,
    output columns vectorised, output channels unrolled; the padded input is materialised first."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        names = block_names(sch)
        if "conv2d_nchw" not in names or len(sch.get_loops(sch.get_sblock("conv2d_nchw"))) != 7:
            return None
        last = names[-1]
        keep = {"conv2d_nchw", "pad_temp", last}
        inline_all_except(sch, keep)
        cores = _cores(target)
        if "pad_temp" in block_names(sch):
            _parallel_outer(sch, sch.get_sblock("pad_temp"), 2, cores)
        conv = sch.get_sblock("conv2d_nchw")
        n, ff, yy, xx, rc, ry, rx = sch.get_loops(conv)
        lanes = 2 * vector_lanes_u64(target)  # float32 lanes: 16 on AVX-512, 8 on AVX2
        ow_tile = largest_divisor(loop_extent(sch, xx), (2 * lanes, lanes, 8, 7, 4))
        # ff_tile x ow_tile accumulators must fit the vector registers
        ff_tile = largest_divisor(loop_extent(sch, ff), (4, 2) if ow_tile > lanes else (8, 4, 2))
        ffo, ffi = sch.split(ff, [None, ff_tile])
        xxo, xxi = sch.split(xx, [None, ow_tile])
        sch.reorder(n, ffo, yy, xxo, rc, ry, rx, ffi, xxi)
        outer = sch.fuse(n, ffo, yy)
        sch.parallel(outer)
        # accumulate the register block locally, write it once
        local = sch.cache_write(conv, 0, "local")
        sch.reverse_compute_at(local, xxo)
        sch.unroll(ffi)
        if ow_tile > 1:
            sch.vectorize(xxi)
            sch.vectorize(sch.get_loops(local)[-1])
        sch.decompose_reduction(conv, rc)
        if last != "conv2d_nchw":
            _parallel_outer(sch, sch.get_sblock(last), 3, cores)
        return sch


class GenericCPU(ScheduleRule):
    """Any other PrimFunc: inline injective producers, parallel outer loops, vectorise inner spatial loops."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        names = block_names(sch)
        if not names:
            return None
        inline_all_except(sch, {names[-1]})
        for name in block_names(sch):
            try:
                self._schedule_block(sch, sch.get_sblock(name), _cores(target))
            except s_tir.ScheduleError:
                continue  # this block keeps its default loop nest; correctness is unaffected
        return sch

    @staticmethod
    def _schedule_block(sch: s_tir.Schedule, block, cores: int) -> None:
        iters = sch.get(block).iter_vars
        spatial = sum(1 for iv in iters if iv.iter_type == 0)
        loops = sch.get_loops(block)
        if len(loops) != len(iters) or spatial == 0:
            return
        _parallel_outer(sch, block, max(1, spatial - 1), cores)
        loops = sch.get_loops(block)
        inner = loops[-1 - (len(iters) - spatial)] if spatial < len(iters) else loops[-1]
        if spatial < len(iters):
            # reduction: (a vector's worth of) the innermost spatial loop goes inside the reductions, vectorised
            reductions = loops[len(loops) - (len(iters) - spatial):]
            width = loop_extent(sch, inner)
            vector = largest_divisor(width, (16, 8, 4))
            if width > 64 and vector > 1:
                _, inner = sch.split(inner, [None, vector])
            if 4 <= loop_extent(sch, inner) <= 64:
                sch.reorder(*reductions, inner)
                sch.vectorize(inner)
            sch.decompose_reduction(block, reductions[0])
        elif loop_extent(sch, inner) >= 4:
            _, lanes = sch.split(inner, [None, largest_divisor(loop_extent(sch, inner), (16, 8, 4, 1))])
            sch.vectorize(lanes)
