"""The bit-serial conv2d (dense is its 1x1 case), AND + popcount with combined scales (eq. 19).

    y[n,o,oh,ow] = sum_{i,j} phi[i,j] * sum_{kh,kw,cw} popcount(A[n, oh*s+kh-p, ow*s+kw-p, j, cw] & W[kh,kw,i,cw,o])
                 + sum_j window_phi[j] * sum_{kh,kw,cw} popcount(A[n, oh*s+kh-p, ow*s+kw-p, j, cw])   (w0 != 0)
                 + base_table[clip(oh), clip(ow), o]                                (bottom level a0 != 0)

phi[i,j] = s_i * d_j (weight plane scale x activation plane step). A weight offset w0 != 0 (ABC-Net's
{-1,+1} bases) multiplies the window counts of the activation planes, window_phi[j] = w0 * d_j: they are
the same for every output channel, so they are counted once per output pixel (block "bitserial_window"),
not once per channel as an all-ones weight plane would be. The bottom-level term
sum_{kh,kw inside the image} sum_c a0[c] W_bar[o,c,kh,kw] depends only on how many kernel taps a window
has in the padding at each side, clip(oh) = (max(0, p - oh*s), max(0, oh*s - p + k - H)) and the same for
ow, so it is a compile-time table indexed by those four counts (interior positions: all 0). The counts are
computed from the output position, never read from memory: any input keeps the reads in bounds. Padded
positions hold 0 bits, and the table only counts positions inside the image, so zero padding is exact
also when 0 is not an activation level (ABC-Net). See patvm.approx.planes for the derivation.

Block names are the contract with patvm.compiler.schedules: "bitserial_counts" (uint64 popcount sums
per plane pair), "bitserial_conv" (their phi-weighted sum), "bitserial_window" and "bitserial_window_term"
(the window counts and their phi-weighted sum, when w0 != 0), "bitserial_output".
"""
from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import te, topi

COUNT_BLOCK = "bitserial_counts"
CONV_BLOCK = "bitserial_conv"
WINDOW_BLOCK = "bitserial_window"
WINDOW_TERM_BLOCK = "bitserial_window_term"
OUTPUT_BLOCK = "bitserial_output"


@dataclass(frozen=True)
class ConvGeometry:
    stride: int
    pad: int
    kernel: int

    def out_size(self, size: int) -> int:
        return (size + 2 * self.pad - self.kernel) // self.stride + 1


def taps_in_padding(position, size: int, geometry: ConvGeometry, maximum=max):
    """The kernel taps the window of output `position` has in the padding before and after the image
    (`position` an int, or a TIR expression with maximum=tvm.tirx.max)."""
    first = position * geometry.stride - geometry.pad
    return maximum(-first, 0), maximum(first + geometry.kernel - size, 0)


def clipped_taps(size: int, geometry: ConvGeometry) -> tuple[int, int]:
    """The most kernel taps any output's window has in the padding before and after the image."""
    clipped = [taps_in_padding(o, size, geometry) for o in range(geometry.out_size(size))]
    return max(before for before, _ in clipped), max(after for _, after in clipped)


def bitserial_conv2d(A: te.Tensor, Wp: te.Tensor, phi: te.Tensor, geometry: ConvGeometry,
                     base_table: te.Tensor | None = None, window_phi: te.Tensor | None = None) -> te.Tensor:
    """A [N,H,W,NA,CW] u64, Wp [K,K,NW,CW,O] u64, phi [NW,NA] f32 -> y [N,O,OH,OW] f32 (NCHW).
    base_table [RA+1, RB+1, CA+1, CB+1, O] f32 (clipped_taps of rows, then columns), or None when a0 = 0;
    window_phi [NA] f32 (w0 * d_j), or None when w0 = 0."""
    n_, h_, w_, na, cw_ = (int(s) for s in A.shape)
    kh_, kw_, nw, _, o_ = (int(s) for s in Wp.shape)
    s, p = geometry.stride, geometry.pad
    oh_, ow_ = geometry.out_size(h_), geometry.out_size(w_)
    A_pad = topi.nn.pad(A, [0, p, p, 0, 0], [0, p, p, 0, 0], name="A_pad") if p else A
    if base_table is not None:
        want = [v + 1 for v in clipped_taps(h_, geometry) + clipped_taps(w_, geometry)] + [o_]
        assert [int(d) for d in base_table.shape] == want, "a bottom-level table of another geometry"

    kh = te.reduce_axis((0, kh_), "kh")
    kw = te.reduce_axis((0, kw_), "kw")
    i = te.reduce_axis((0, nw), "i")
    j = te.reduce_axis((0, na), "j")
    cw = te.reduce_axis((0, cw_), "cw")

    # integer popcount sums per (weight plane, activation plane): the float scale is applied once per
    # output, not once per word (int->float conversions are the costly part of the inner loop)
    counts = te.compute(
        (n_, oh_, ow_, nw, na, o_),
        lambda n, oh, ow, pi, pj, o: te.sum(
            tvm.tirx.popcount(A_pad[n, oh * s + kh, ow * s + kw, pj, cw] & Wp[kh, kw, pi, cw, o]),
            axis=[kh, kw, cw]),
        name=COUNT_BLOCK)
    window = None
    if window_phi is not None:
        wh, ww, wc = te.reduce_axis((0, kh_), "wh"), te.reduce_axis((0, kw_), "ww"), te.reduce_axis((0, cw_), "wc")
        window = te.compute(
            (n_, oh_, ow_, na),
            lambda n, oh, ow, pj: te.sum(tvm.tirx.popcount(A_pad[n, oh * s + wh, ow * s + ww, pj, wc]),
                                         axis=[wh, ww, wc]),
            name=WINDOW_BLOCK)

        wj = te.reduce_axis((0, na), "wj")
        window_term = te.compute(
            (n_, oh_, ow_),
            lambda n, oh, ow: te.sum(window_phi[wj] * window[n, oh, ow, wj].astype("int32").astype("float32"),
                                     axis=[wj]),
            name=WINDOW_TERM_BLOCK)

    def combine(n, oh, ow, o):
        y = phi[i, j] * counts[n, oh, ow, i, j, o].astype("int32").astype("float32")
        if window is None:
            return y
        # the window term joins the first plane pair's (a reduction's init is dropped by create_prim_func)
        return y + tvm.tirx.Select(i + j == 0, window_term[n, oh, ow], tvm.tirx.const(0.0, "float32"))

    conv = te.compute((n_, oh_, ow_, o_), lambda n, oh, ow, o: te.sum(combine(n, oh, ow, o), axis=[i, j]),
                      name=CONV_BLOCK)

    def output(n, o, oh, ow):
        y = conv[n, oh, ow, o]
        if base_table is not None:
            rows = taps_in_padding(oh, h_, geometry, tvm.tirx.max)
            cols = taps_in_padding(ow, w_, geometry, tvm.tirx.max)
            y = y + base_table[(*rows, *cols, o)]
        return y

    return te.compute((n_, o_, oh_, ow_), output, name=OUTPUT_BLOCK)
