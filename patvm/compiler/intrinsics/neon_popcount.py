"""A NEON micro-kernel for the bit-serial counts, as a TensorIntrin: one register tile of `pixels` output
pixels x `channels` output channels of one plane pair, over a group of reduction words.

The TE compute (patvm.compiler.ops.bitserial) sums `popcount(A & W)` per word into uint64 counts; LLVM
vectorises that as and, cnt.16b, then uaddlp, uaddlp, uadalp (or movi, udot, uadalp) for every 128-bit
word, ~6 instructions per popcount. The micro-kernel instead keeps the byte counts of `cnt` in uint8x16
registers and adds them bytewise (and, cnt, add per word): a `cnt` byte is at most 8, so up to
MAX_BYTE_WORDS = 31 words fit in a byte (248). Once per group it widens each register into the uint64
counts with uaddlp, uaddlp, uadalp. A vector holds two output channels (the weights are [.., CW, O] with
O innermost); the activation word of a pixel is broadcast to both lanes.

Tensorize matches the intrinsic's description (the TE compute's own loop nest over the group) exactly,
so the result is the same integers as the generic schedule, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm.script
from tvm import s_tir
from tvm.script import tirx as T

MAX_BYTE_WORDS = 31          # 31 * 8 = 248 <= 255: byte sums of cnt cannot overflow within a group
LANES_U64 = 2                # uint64 lanes of a 128-bit NEON register


@dataclass(frozen=True)
class PopcountTile:
    """The region one intrinsic call covers: reduction words kh x kw x cw, pixels x channels outputs."""

    kh: int
    kw: int
    cw: int
    pixels: int
    channels: int
    stride: int
    unroll_words: bool = True    # unroll the kw x cw words of a kernel row in the micro-kernel

    @property
    def words(self) -> int:
        return self.kh * self.kw * self.cw

    @property
    def name(self) -> str:
        return (f"patvm_neon_popcount_k{self.kh}x{self.kw}_cw{self.cw}_p{self.pixels}_o{self.channels}"
                f"_s{self.stride}{'_u' if self.unroll_words else ''}")

    def check(self) -> None:
        if self.words > MAX_BYTE_WORDS:
            raise ValueError(f"{self.words} words per group: the byte sums could overflow (at most {MAX_BYTE_WORDS})")
        if self.channels % LANES_U64:
            raise ValueError(f"{self.channels} channels: a multiple of {LANES_U64} is needed")


def _strides(n: int) -> list:
    return [T.int64() for _ in range(n)]


def _description(t: PopcountTile):
    """The TE compute's loop nest below the tensorized loop: counts += popcount(A & W), word by word.

    Written as TVMScript text because the nest must leave out the unit loops that compute_at drops
    (a 1x1 kernel has no kh, kw loops, a one-pixel tile no pixel loop), or tensorize does not match."""
    axes = [("p", t.pixels, "spatial"), ("o", t.channels, "spatial"), ("kh", t.kh, "reduce"),
            ("kw", t.kw, "reduce"), ("cw", t.cw, "reduce")]
    var = {name: (f"v{name}" if extent > 1 else "T.int64(0)") for name, extent, _ in axes}
    loops = [name for name in ("kh", "kw", "cw", "p", "o") if dict((a[0], a[1]) for a in axes)[name] > 1]
    lines = [f"{'    ' * (2 + k)}for {name} in T.serial(T.int64({dict((a[0], a[1]) for a in axes)[name]})):"
             for k, name in enumerate(loops)]
    body = "    " * (2 + len(loops))
    lines.append(f'{body}with T.sblock("update"):')
    inner = body + "    "
    lines += [f"{inner}v{name} = T.axis.{kind}(T.int64({extent}), {name})" for name, extent, kind in axes if extent > 1]
    column = f"{var['p']} * T.int64({t.stride}) + {var['kw']}"
    lines.append(f"{inner}C[0, 0, {var['p']}, 0, 0, {var['o']}] = C[0, 0, {var['p']}, 0, 0, {var['o']}] + T.popcount("
                 f"A[0, {var['kh']}, {column}, 0, {var['cw']}] & W[{var['kh']}, {var['kw']}, 0, {var['cw']}, {var['o']}])")
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
    """Byte sums in registers (and, cnt, add per word), widened into the uint64 counts once per call."""
    i64 = T.int64
    span = (t.pixels - 1) * t.stride + t.kw
    vectors = t.channels // LANES_U64
    word_loop = T.unroll if t.unroll_words else T.serial

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
            # one uint8x16 register of byte counts per (pixel, channel pair): promoted to registers
            acc = T.decl_buffer((t.pixels, vectors, 16), "uint8", scope="local")
            for p, q in T.grid(t.pixels, vectors):
                acc[p, q, T.ramp(0, 1, 16)] = T.broadcast(T.uint8(0), 16)
            for kh in T.serial(i64(t.kh)):
                for kw in word_loop(i64(t.kw)):
                    for cw in word_loop(i64(t.cw)):
                        for p in T.unroll(t.pixels):
                            for q in T.unroll(vectors):
                                acc[p, q, T.ramp(0, 1, 16)] = acc.vload([p, q, 0], "uint8x16") + T.popcount(
                                    T.reinterpret("uint8x16", T.broadcast(A[0, kh, p * t.stride + kw, 0, cw], 2)
                                                  & W.vload([kh, kw, 0, cw, q * 2], "uint64x2")))
            for p, q in T.grid(t.pixels, vectors):
                C[0, 0, p, 0, 0, T.ramp(q * 2, 1, 2)] = C.vload([0, 0, p, 0, 0, q * 2], "uint64x2") + \
                    T.call_llvm_pure_intrin("uint64x2", "llvm.aarch64.neon.uaddlp",
                                            T.call_llvm_pure_intrin("uint32x4", "llvm.aarch64.neon.uaddlp",
                                                                    T.call_llvm_pure_intrin(
                                                                        "uint16x8", "llvm.aarch64.neon.uaddlp",
                                                                        acc.vload([p, q, 0], "uint8x16"))))

    return impl


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
