"""The bit-serial conv on aarch64 NEON: BitSerialCPU's loop nest, with the counts of each register tile
computed by the NEON micro-kernel of patvm.compiler.intrinsics.neon_popcount (and, cnt, an addp tree
and one uadalp per activation word, uint16 sums in registers, widened once per group of words).

Differences from the generic CPU schedule: the zero-padded activations are materialised (their own
parallel loop nest, a copy of the input) so that the micro-kernel reads plain words, not a padding
select; the tile is chosen so that its accumulators and weight vectors leave room in the 32 NEON
registers for the addp trees; and the reduction (kh, kw, cw) is cut into groups of at most
MAX_GROUP_WORDS words (in practice one group: 1023 words is 7232 channels of a 3x3 kernel), each one
tensorized.
"""
from __future__ import annotations

import tvm
import tvm.sym
from tvm import s_tir
from tvm.target import Target

from patvm.compiler.intrinsics.neon_popcount import (LANES_U64, MAX_GROUP_WORDS, TREE_VECTORS, PopcountTile,
                                                     popcount_tile_intrin)
from patvm.compiler.ops.bitserial import COUNT_BLOCK
from patvm.compiler.schedules.common import block_names
from patvm.compiler.schedules.cpu import BitSerialCPU, _cores, _parallel_outer, largest_divisor

PAD_BLOCK = "A_pad"          # topi.nn.pad's block in patvm.compiler.ops.bitserial
TILE_REGISTERS = 24          # accumulators + weight vectors of a tile; the rest of the 32 for the addp trees
PIXEL_TILES = (7, 4, 2, 1)
CHANNEL_TILES = (16, 8, 4, 2)
UNROLLED_POPCOUNTS = 192     # words are unrolled while a block has at most this many cnt: more, and the
                             # loads LLVM hoists spill (measured: 7x16 tiles with 2 words unrolled spill)


def is_aarch64(target: Target) -> bool:
    return target.kind.name == "llvm" and str(target.attrs.get("mtriple", "")).startswith("aarch64")


def tile_registers(pixels: int, channels: int) -> int:
    """NEON registers a tile keeps live: one uint16 accumulator per pixel and tree, the weight vectors."""
    trees = max(1, channels // (TREE_VECTORS * LANES_U64))
    return pixels * trees + channels // LANES_U64


def neon_tiles(ow_: int, o_: int) -> tuple[int, int] | None:
    """(pixels, channels) of the register tile with the most popcounts per word (pixels x channels / 2)
    that fits TILE_REGISTERS, or None where no channel tile divides o_ (an odd number of channels)."""
    fits = [(p, q) for p in PIXEL_TILES if ow_ % p == 0 for q in CHANNEL_TILES
            if o_ % q == 0 and tile_registers(p, q) <= TILE_REGISTERS]
    return max(fits, key=lambda pq: (pq[0] * pq[1], pq[1])) if fits else None


def unroll_policy(k_w: int, c_w: int, popcounts_per_word: int) -> str:
    """Which words of a group the micro-kernel unrolls: a whole kernel row, its channel words, or none
    (a tile of 7 x 16 has 56 cnt per word, enough for one loop iteration)."""
    if k_w * c_w * popcounts_per_word <= UNROLLED_POPCOUNTS:
        return "row"
    return "cw" if c_w * popcounts_per_word <= UNROLLED_POPCOUNTS else "none"


def word_groups(k_h: int, k_w: int, c_w: int) -> tuple[str, tuple[int, int, int]]:
    """(the reduction loop to tensorize at, the (kh, kw, cw) words of one group): the outermost loop whose
    words fit MAX_GROUP_WORDS; "cw_inner" means the channel words are split into chunks first."""
    if k_h * k_w * c_w <= MAX_GROUP_WORDS:
        return ("kh" if k_h > 1 else "kw" if k_w > 1 else "cw"), (k_h, k_w, c_w)
    if k_w * c_w <= MAX_GROUP_WORDS:
        return ("kw" if k_w > 1 else "cw"), (1, k_w, c_w)
    if c_w <= MAX_GROUP_WORDS:
        return "cw", (1, 1, c_w)
    return "cw_inner", (1, 1, largest_divisor(c_w, tuple(range(MAX_GROUP_WORDS, 0, -1))))


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
                                                   unroll=unroll_policy(g_w, g_c, pixels * channels // LANES_U64)))
        sch.tensorize(tile[at], intrin)
