"""The bit-serial conv on aarch64 NEON: BitSerialCPU's loop nest, with the counts of each register tile
computed by the NEON micro-kernel of patvm.compiler.intrinsics.neon_popcount (byte sums of `cnt` kept in
registers over a group of up to 31 words, widened once per group).

Differences from the generic CPU schedule: the zero-padded activations are materialised (their own
parallel loop nest, a copy of the input) so that the micro-kernel reads plain words, not a padding
select; the tile is chosen so that its byte accumulators (pixels x channels / 2 registers) plus the
weight vectors fit the 32 NEON registers; and the reduction (kh, kw, cw) is cut into groups of at most
31 words, each one tensorized.
"""
from __future__ import annotations

import tvm
import tvm.sym
from tvm import s_tir
from tvm.target import Target

from patvm.compiler.intrinsics.neon_popcount import LANES_U64, MAX_BYTE_WORDS, PopcountTile, popcount_tile_intrin
from patvm.compiler.ops.bitserial import COUNT_BLOCK
from patvm.compiler.schedules.common import block_names
from patvm.compiler.schedules.cpu import BitSerialCPU, _cores, _parallel_outer, largest_divisor

PAD_BLOCK = "A_pad"          # topi.nn.pad's block in patvm.compiler.ops.bitserial
MAX_ACCUMULATORS = 16        # byte-sum registers of a tile; with the weight vectors and temporaries <= 32
PIXEL_TILES = (4, 7, 2, 1)
CHANNEL_TILES = (8, 4, 2)
UNROLLED_WORDS = 8           # a kernel row's kw x cw words are unrolled up to this many


def is_aarch64(target: Target) -> bool:
    return target.kind.name == "llvm" and str(target.attrs.get("mtriple", "")).startswith("aarch64")


def neon_tiles(ow_: int, o_: int) -> tuple[int, int] | None:
    """(pixels, channels) of the register tile, or None where no tile of >= 2 channels divides o_."""
    pixels = largest_divisor(ow_, PIXEL_TILES)
    fitting = tuple(q for q in CHANNEL_TILES if pixels * q // LANES_U64 <= MAX_ACCUMULATORS)
    channels = largest_divisor(o_, fitting)
    return (pixels, channels) if channels >= LANES_U64 else None


def word_groups(k_h: int, k_w: int, c_w: int) -> tuple[str, tuple[int, int, int]]:
    """(the reduction loop to tensorize at, the (kh, kw, cw) words of one group): the outermost loop whose
    words fit MAX_BYTE_WORDS; "cw_inner" means the channel words are split into chunks first."""
    if k_h * k_w * c_w <= MAX_BYTE_WORDS:
        return ("kh" if k_h > 1 else "kw" if k_w > 1 else "cw"), (k_h, k_w, c_w)
    if k_w * c_w <= MAX_BYTE_WORDS:
        return ("kw" if k_w > 1 else "cw"), (1, k_w, c_w)
    if c_w <= MAX_BYTE_WORDS:
        return "cw", (1, 1, c_w)
    return "cw_inner", (1, 1, largest_divisor(c_w, tuple(range(MAX_BYTE_WORDS, 0, -1))))


def pixel_stride(sch: s_tir.Schedule, counts) -> int:
    """The conv stride, read off the counts block: its activation column index is ow * stride + kw."""
    block = sch.get(counts)
    ow = block.iter_vars[2].var
    for read in block.reads:          # counts (6-d), the activations and the weights (5-d, no ow)
        if len(read.region) == 5:
            coefficient, _ = tvm.sym.detect_linear_equation(read.region[2].min, [ow])
            if int(coefficient):
                return int(coefficient)
    raise ValueError("the counts block reads no activation column ow * stride + kw")


class BitSerialNEON(BitSerialCPU):
    """BitSerialCPU on aarch64 with the NEON counts micro-kernel. Other targets, layers with an odd number
    of output channels and layers with a single reduction word are left to the next rule (BitSerialCPU)."""

    def apply(self, func, target: Target, tunable: bool):
        if not is_aarch64(target) or not isinstance(func, tvm.tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        if COUNT_BLOCK not in block_names(sch):
            return None
        extents = [int(iv.dom.extent) for iv in sch.get(sch.get_sblock(COUNT_BLOCK)).iter_vars]
        ow_, o_, words = extents[2], extents[5], extents[6] * extents[7] * extents[8]
        if neon_tiles(ow_, o_) is None or words == 1:   # one word per output: no byte sums to keep
            return None
        return super().apply(func, target, tunable)

    def _kept_blocks(self, names: list[str]) -> set[str]:
        return {PAD_BLOCK} & set(names)

    def _tiles(self, ow_: int, o_: int, target: Target) -> tuple[int, int]:
        return neon_tiles(ow_, o_)

    def _schedule_count_tile(self, sch: s_tir.Schedule, tile: dict, o_tile: int) -> None:
        """Nothing: the micro-kernel unrolls and vectorises the tile itself."""

    def _finish(self, sch: s_tir.Schedule, counts, tile: dict, target: Target) -> None:
        if PAD_BLOCK in block_names(sch):
            _parallel_outer(sch, sch.get_sblock(PAD_BLOCK), 3, _cores(target))
        k_h, k_w, c_w = (int(iv.dom.extent) for iv in sch.get(counts).iter_vars[6:])
        at, (g_h, g_w, g_c) = word_groups(k_h, k_w, c_w)
        if at == "cw_inner":
            _, tile["cw_inner"] = sch.split(tile["cw"], [None, g_c])
        nest = ("kh", "kw", "cw", "cw_inner", "ow", "o")    # the loops below the tile's, outer to inner
        at = next(name for name in nest[nest.index(at):] if name in tile)   # unit loops are not in `tile`
        pixels = int(sch.get(tile["ow"]).extent) if "ow" in tile else 1
        channels = int(sch.get(tile["o"]).extent)
        intrin = popcount_tile_intrin(PopcountTile(g_h, g_w, g_c, pixels, channels, pixel_stride(sch, counts),
                                                   unroll_words=g_w * g_c <= UNROLLED_WORDS))
        sch.tensorize(tile[at], intrin)
