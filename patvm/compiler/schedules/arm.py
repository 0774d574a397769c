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

from dataclasses import dataclass

import tvm
import tvm.sym
from tvm import s_tir
from tvm.target import Target

from patvm.compiler.intrinsics.neon_popcount import (
    LANES_U64,
    MAX_GROUP_WORDS,
    TREE_VECTORS,
    PopcountTile,
    popcount_tile_intrin,
)
from patvm.compiler.ops.bitserial import COUNT_BLOCK
from patvm.compiler.schedules.common import block_names
from patvm.compiler.schedules.cpu import BitSerialCPU, _cores, _parallel_outer, largest_divisor

PAD_BLOCK = "A_pad"          # topi.nn.pad's block in patvm.compiler.ops.bitserial
PIXEL_TILES = (7, 4, 2, 1)
CHANNEL_TILES = (16, 8, 4, 2)
# Two shapes of hot loop, from measuring the hot block on ResNet18's layers (benchmarks/neon_static.py):
# - stride 1 and a kernel row of few words: the row's words unrolled, so that LLVM loads each activation
#   column once for the whole row (a pixel's column kw+1 is the next pixel's column kw); the tile stays
#   small (<= ROW_TILE_REGISTERS) because the row's loads are live together, and at most
#   ROW_POPCOUNTS cnt are unrolled (more, and the hoisted loads spill);
# - otherwise one word per loop iteration with the largest tile (<= WORD_TILE_REGISTERS): 56 cnt of a
#   7 x 16 tile per activation broadcast and weight load.
ROW_TILE_REGISTERS = 16
ROW_MIN_POPCOUNTS_PER_WORD = 28
ROW_POPCOUNTS = 192
WORD_TILE_REGISTERS = 24     # accumulators + weight vectors; the rest of the 32 for the addp trees


def is_aarch64(target: Target) -> bool:
    """An LLVM target for aarch64 (the NEON kernel's intrinsics exist only there)."""
    return target.kind.name == "llvm" and str(target.attrs.get("mtriple", "")).startswith("aarch64")


def tile_registers(pixels: int, channels: int) -> int:
    """NEON registers a tile keeps live: one uint16 accumulator per pixel and tree, the weight vectors."""
    trees = max(1, channels // (TREE_VECTORS * LANES_U64))
    return pixels * trees + channels // LANES_U64


@dataclass(frozen=True)
class NeonPlan:
    pixels: int
    channels: int
    unroll: str                  # PopcountTile.unroll: "row" or "none"


def neon_plan(ow_: int, o_: int, k_w: int, c_w: int, stride: int) -> NeonPlan | None:
    """The register tile and unrolling for a layer, or None where no channel tile divides o_ (odd)."""
    tiles = [(p, q) for p in PIXEL_TILES if ow_ % p == 0 for q in CHANNEL_TILES if o_ % q == 0]

    def best(candidates):
        return max(candidates, key=lambda pq: (pq[0] * pq[1], pq[1]))

    if stride == 1 and k_w > 1:
        row = [(p, q) for p, q in tiles if tile_registers(p, q) <= ROW_TILE_REGISTERS
               and ROW_MIN_POPCOUNTS_PER_WORD <= p * q // LANES_U64 <= ROW_POPCOUNTS // (k_w * c_w)]
        if row:
            return NeonPlan(*best(row), "row")
    word = [(p, q) for p, q in tiles if tile_registers(p, q) <= WORD_TILE_REGISTERS]
    return NeonPlan(*best(word), "none") if word else None


def word_groups(k_h: int, k_w: int, c_w: int) -> tuple[str, tuple[int, int, int]] | None:
    """(the reduction loop to tensorize at, the (kh, kw, cw) words of one group): the outermost loop whose
    words fit MAX_GROUP_WORDS; "cw_inner" means the channel words are split into chunks first. None where
    the chunks would be single words (c_w a prime above the limit: a unit loop tensorize cannot match)."""
    if k_h * k_w * c_w <= MAX_GROUP_WORDS:
        return ("kh" if k_h > 1 else "kw" if k_w > 1 else "cw"), (k_h, k_w, c_w)
    if k_w * c_w <= MAX_GROUP_WORDS:
        return ("kw" if k_w > 1 else "cw"), (1, k_w, c_w)
    if c_w <= MAX_GROUP_WORDS:
        return "cw", (1, 1, c_w)
    chunk = largest_divisor(c_w, tuple(range(MAX_GROUP_WORDS, 1, -1)))
    return ("cw_inner", (1, 1, chunk)) if chunk > 1 else None


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
        counts = sch.get_sblock(COUNT_BLOCK)
        extents = [int(iv.dom.extent) for iv in sch.get(counts).iter_vars]
        ow_, o_, (k_h, k_w, c_w) = extents[2], extents[5], extents[6:]
        if k_h * k_w * c_w == 1 or word_groups(k_h, k_w, c_w) is None:   # one word per output: no sums to keep
            return None
        # read by the hooks below during super().apply (rules are applied one function at a time)
        self._plan = neon_plan(ow_, o_, k_w, c_w, pixel_stride(sch, counts))
        if self._plan is None:
            return None
        return super().apply(func, target, tunable)

    def _kept_blocks(self, names: list[str]) -> set[str]:
        return {PAD_BLOCK} & set(names)

    def _tiles(self, ow_: int, o_: int, target: Target) -> tuple[int, int]:
        return self._plan.pixels, self._plan.channels

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
                                                   unroll=self._plan.unroll))
        sch.tensorize(tile[at], intrin)
