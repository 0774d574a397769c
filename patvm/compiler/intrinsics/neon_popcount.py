"""A NEON micro-kernel for the bit-serial counts, as a TensorIntrin: one register tile of `pixels` output
pixels x `channels` output channels of one plane pair, over a group of reduction words.

The TE compute (patvm.compiler.ops.bitserial) sums `popcount(A & W)` per word into uint64 counts; left to
LLVM that becomes and, cnt.16b, then uaddlp, uaddlp, uadalp (or movi, udot, uadalp) for every 128-bit
word, ~6.5 instructions per popcount. A vector holds two output channels (the weights are [.., CW, O], O
innermost) and the activation word of a pixel is broadcast to both lanes. Per word and pixel the
micro-kernel does, in the shape of Larq Compute Engine's BGEMM block: and + cnt per weight vector (bytes
<= 8), an addp tree merging 4 vectors into one register of 8 channels x 2 bytes (<= 32), one uadalp into
a uint16x8 accumulator (one lane per channel, <= 64 more per word: MAX_GROUP_WORDS words cannot
overflow). So 4 cnt cost 4 and, 4 cnt, 3 addp, 1 uadalp, plus the loads; the accumulators are widened
into the uint64 counts once per call, outside the loop.

Tensorize matches the intrinsic's description (the TE compute's own loop nest over the group) exactly,
and the implementation computes the same integers, so results are bit for bit those of the generic
schedule.
"""
from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm.script
from tvm import s_tir
from tvm.script import tirx as T

MAX_GROUP_WORDS = 1023       # uint16 lanes gain <= 64 per word (2 bytes <= 32): 1023 * 64 <= 65535
LANES_U64 = 2                # uint64 lanes of a 128-bit NEON register
TREE_VECTORS = 4             # weight vectors (8 channels) merged by one addp tree


@dataclass(frozen=True)
class PopcountTile:
    """The region one intrinsic call covers: reduction words kh x kw x cw, pixels x channels outputs."""

    kh: int
    kw: int
    cw: int
    pixels: int
    channels: int
    stride: int
    unroll: str = "row"          # words unrolled in the micro-kernel: "row" (kw x cw), "cw" or "none"

    @property
    def tree_vectors(self) -> int:
        """Weight vectors per addp tree: 4 (8 channels), or all of them for 2 or 4 channels."""
        return min(TREE_VECTORS, self.channels // LANES_U64)

    @property
    def trees(self) -> int:
        return self.channels // LANES_U64 // self.tree_vectors

    @property
    def words(self) -> int:
        return self.kh * self.kw * self.cw

    @property
    def name(self) -> str:
        return (f"patvm_neon_popcount_k{self.kh}x{self.kw}_cw{self.cw}_p{self.pixels}_o{self.channels}"
                f"_s{self.stride}_u{self.unroll}")

    def check(self) -> None:
        if self.words > MAX_GROUP_WORDS:
            raise ValueError(f"{self.words} words per group: the sums could overflow (at most {MAX_GROUP_WORDS})")
        if self.channels not in (2, 4) and self.channels % (TREE_VECTORS * LANES_U64):
            raise ValueError(f"{self.channels} channels: 2, 4 or a multiple of {TREE_VECTORS * LANES_U64} needed")


def _strides(n: int) -> list:
    return [T.int64() for _ in range(n)]


def _description(t: PopcountTile):
    """The TE compute's loop nest below the tensorized loop: counts += popcount(A & W), word by word.

    Written as TVMScript text because the nest must leave out the unit loops that compute_at drops
    (a 1x1 kernel has no kh, kw loops, a one-pixel tile no pixel loop), or tensorize does not match."""
    extents = {"p": t.pixels, "o": t.channels, "kh": t.kh, "kw": t.kw, "cw": t.cw}
    kinds = {"p": "spatial", "o": "spatial", "kh": "reduce", "kw": "reduce", "cw": "reduce"}
    var = {name: (f"v{name}" if extent > 1 else "T.int64(0)") for name, extent in extents.items()}
    loops = [name for name in ("kh", "kw", "cw", "p", "o") if extents[name] > 1]
    lines = [f"{'    ' * (2 + k)}for {name} in T.serial(T.int64({extents[name]})):" for k, name in enumerate(loops)]
    body = "    " * (2 + len(loops))
    lines.append(f'{body}with T.sblock("update"):')
    inner = body + "    "
    # block iter vars in the TE compute's order: spatial (p, o) first, then the reductions
    lines += [f"{inner}v{name} = T.axis.{kinds[name]}(T.int64({extents[name]}), {name})"
              for name in ("p", "o", "kh", "kw", "cw") if extents[name] > 1]
    out = f"C[0, 0, {var['p']}, 0, 0, {var['o']}]"
    a = f"A[0, {var['kh']}, {var['p']} * T.int64({t.stride}) + {var['kw']}, 0, {var['cw']}]"
    w = f"W[{var['kh']}, {var['kw']}, 0, {var['cw']}, {var['o']}]"
    lines.append(f"{inner}{out} = {out} + T.popcount({a} & {w})")
    source = _HEADER.format(**_shapes(t)) + "\n".join(lines) + "\n"
    return tvm.script.from_source(source)


_HEADER = """# from tvm.script import tirx as T
@T.prim_func(s_tir=True)
def desc(a: T.handle, w: T.handle, c: T.handle):
    A = T.match_buffer(a, {a_shape}, "uint64", offset_factor=1, strides=({s5}))
    W = T.match_buffer(w, {w_shape}, "uint64", offset_factor=1, strides=({s5}))
    C = T.match_buffer(c, {c_shape}, "uint64", offset_factor=1, strides=({s6}))
    with T.sblock("root"):
        T.reads(C[0, 0, 0:{pixels}, 0, 0, 0:{channels}], A[0, 0:{kh}, 0:{span}, 0, 0:{cw}], W[0:{kh}, 0:{kw}, 0, 0:{cw}, 0:{channels}])
        T.writes(C[0, 0, 0:{pixels}, 0, 0, 0:{channels}])
"""


def _shapes(t: PopcountTile) -> dict:
    span = (t.pixels - 1) * t.stride + t.kw       # activation columns the tile reads

    def shape(*dims):
        return "(" + ", ".join(f"T.int64({d})" for d in dims) + ")"

    return dict(a_shape=shape(1, t.kh, span, 1, t.cw), w_shape=shape(t.kh, t.kw, 1, t.cw, t.channels),
                c_shape=shape(1, 1, t.pixels, 1, 1, t.channels), s5=", ".join(["T.int64()"] * 5),
                s6=", ".join(["T.int64()"] * 6), pixels=t.pixels, channels=t.channels, kh=t.kh, kw=t.kw,
                cw=t.cw, span=span)


def _implementation(t: PopcountTile):
    """Per word and pixel: and + cnt for each weight vector, an addp tree that merges up to 4 of them into
    one register (8 channels x 2 bytes), one uadalp into uint16 sums; widened into the counts once."""
    i64 = T.int64
    span = (t.pixels - 1) * t.stride + t.kw
    tree, trees = t.tree_vectors, t.trees
    kw_loop = T.unroll if t.unroll == "row" else T.serial
    cw_loop = T.unroll if t.unroll in ("row", "cw") else T.serial

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, w: T.handle, c: T.handle):
        A = T.match_buffer(a, (i64(1), i64(t.kh), i64(span), i64(1), i64(t.cw)), "uint64", offset_factor=1,
                           strides=_strides(5))
        W = T.match_buffer(w, (i64(t.kh), i64(t.kw), i64(1), i64(t.cw), i64(t.channels)), "uint64",
                           offset_factor=1, strides=_strides(5))
        C = T.match_buffer(c, (i64(1), i64(1), i64(t.pixels), i64(1), i64(1), i64(t.channels)), "uint64",
                           offset_factor=1, strides=_strides(6))
        with T.sblock("root"):
            T.reads(C[0, 0, 0:t.pixels, 0, 0, 0:t.channels], A[0, 0:t.kh, 0:span, 0, 0:t.cw],
                    W[0:t.kh, 0:t.kw, 0, 0:t.cw, 0:t.channels])
            T.writes(C[0, 0, 0:t.pixels, 0, 0, 0:t.channels])
            # one uint16x8 register per (pixel, tree of channels): promoted to registers by LLVM
            acc = T.decl_buffer((t.pixels, trees, 8), "uint16", scope="local")
            for p in T.unroll(t.pixels):
                for r in T.unroll(trees):
                    acc[p, r, T.ramp(0, 1, 8)] = T.broadcast(T.uint16(0), 8)
            for kh in T.serial(i64(t.kh)):
                for kw in kw_loop(i64(t.kw)):
                    for cw in cw_loop(i64(t.cw)):
                        for p in T.unroll(t.pixels):
                            for r in T.unroll(trees):
                                acc[p, r, T.ramp(0, 1, 8)] = acc.vload([p, r, 0], "uint16x8") + _pairwise_u16(
                                    _count_tree(T.broadcast(A[0, kh, p * t.stride + kw, 0, cw], 2),
                                                [W.vload([kh, kw, 0, cw, (r * tree + v) * 2], "uint64x2")
                                                 for v in range(tree)]))
            for p in T.unroll(t.pixels):
                for r in T.unroll(trees):
                    C[0, 0, p, 0, 0, T.ramp(r * tree * 2, 1, tree * 2)] = \
                        C.vload([0, 0, p, 0, 0, r * tree * 2], f"uint64x{tree * 2}") + \
                        _channel_sums(acc.vload([p, r, 0], "uint16x8"), tree)

    return impl


def _neon(name: str, dtype: str, *args):
    return T.call_llvm_pure_intrin(dtype, f"llvm.aarch64.neon.{name}", *args)


def _count_tree(activation, weights: list):
    """uint8x16 of byte counts of activation & each weight vector (each byte <= 8), merged by an addp
    tree: 1, 2 or 4 vectors -> one register whose bytes stay per channel (<= 32 each)."""
    level = [T.popcount(T.reinterpret("uint8x16", activation & w)) for w in weights]
    while len(level) > 1:
        level = [_neon("addp", "uint8x16", level[k], level[k + 1]) for k in range(0, len(level), 2)]
    return level[0]


def _pairwise_u16(bytes_u8x16):
    """uaddlp: pairs of bytes -> uint16 (added into the accumulator, LLVM makes it uadalp)."""
    return _neon("uaddlp", "uint16x8", bytes_u8x16)


def _channel_sums(sums_u16x8, tree: int):
    """The accumulator (2 * tree channels, 8 / (2 * tree) uint16 lanes each) -> one uint64 per channel."""
    if tree == 4:
        return T.Cast("uint64x8", sums_u16x8)
    u32 = _neon("uaddlp", "uint32x4", sums_u16x8)
    return T.Cast("uint64x4", u32) if tree == 2 else _neon("uaddlp", "uint64x2", u32)


_REGISTERED: set[str] = set()


def popcount_tile_intrin(tile: PopcountTile) -> str:
    """The name of the TensorIntrin for `tile`, registered on first use."""
    tile.check()
    if tile.name not in _REGISTERED:
        try:
            s_tir.TensorIntrin.register(tile.name, _description(tile), _implementation(tile))
        except Exception:  # noqa: BLE001 - already registered by an earlier import of this module (reload)
            s_tir.TensorIntrin.get(tile.name)
        _REGISTERED.add(tile.name)
    return tile.name
