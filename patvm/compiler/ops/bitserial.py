"""The bit-serial conv2d (dense is its 1x1 case), AND + popcount with combined scales (eq. 19).

    y[n,o,oh,ow] = sum_{i,j} phi[i,j] * sum_{kh,kw,cw} popcount(A[n, oh*s+kh-p, ow*s+kw-p, j, cw] & W[kh,kw,i,cw,o])
                 + sum_j window_coef[j] * sum_{kh,kw,cw} popcount(A[...j...])        (weight offset w0 != 0)
                 + sum_{kh,kw inside the image} base_term[o,kh,kw]                    (bottom level a0 != 0)

phi[i,j] = s_i * d_j (weight plane scale x activation thermometer step); window_coef[j] = w0 * d_j; and
base_term[o,kh,kw] = sum_c a0[c] * W_bar[o,c,kh,kw]. Padded positions hold 0 bits, and the base term only
counts positions inside the image, so zero padding is exact also when 0 is not an activation level
(ABC-Net). See patvm.approx.planes for the derivation.

Block names are the contract with patvm.compiler.schedules: "bitserial_counts" (uint64 popcount sums
per plane pair), "bitserial_conv" (their phi-weighted sum), "window_count",
"base_level_term", "bitserial_output".
"""
from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import te, topi

COUNT_BLOCK = "bitserial_counts"
CONV_BLOCK = "bitserial_conv"
OUTPUT_BLOCK = "bitserial_output"


@dataclass(frozen=True)
class ConvGeometry:
    stride: int
    pad: int
    kernel: int

    def out_size(self, size: int) -> int:
        return (size + 2 * self.pad - self.kernel) // self.stride + 1


def bitserial_conv2d(A: te.Tensor, Wp: te.Tensor, phi: te.Tensor, geometry: ConvGeometry,
                     window_coef: te.Tensor | None = None, base_term: te.Tensor | None = None) -> te.Tensor:
    """A [N,H,W,NA,CW] u64, Wp [K,K,NW,CW,O] u64, phi [NW,NA] f32 -> y [N,O,OH,OW] f32 (NCHW)."""
    n_, h_, w_, na, cw_ = (int(s) for s in A.shape)
    kh_, kw_, nw, _, o_ = (int(s) for s in Wp.shape)
    s, p = geometry.stride, geometry.pad
    oh_, ow_ = geometry.out_size(h_), geometry.out_size(w_)
    A_pad = topi.nn.pad(A, [0, p, p, 0, 0], [0, p, p, 0, 0], name="A_pad") if p else A

    kh = te.reduce_axis((0, kh_), "kh")
    kw = te.reduce_axis((0, kw_), "kw")
    i = te.reduce_axis((0, nw), "i")
    j = te.reduce_axis((0, na), "j")
    cw = te.reduce_axis((0, cw_), "cw")

    def popc(x):
        return tvm.tirx.popcount(x).astype("int32").astype("float32")

    # integer popcount sums per (weight plane, activation plane): the float scale is applied once per
    # output, not once per word (int->float conversions are the costly part of the inner loop)
    counts = te.compute(
        (n_, oh_, ow_, nw, na, o_),
        lambda n, oh, ow, pi, pj, o: te.sum(
            tvm.tirx.popcount(A_pad[n, oh * s + kh, ow * s + kw, pj, cw] & Wp[kh, kw, pi, cw, o]),
            axis=[kh, kw, cw]),
        name=COUNT_BLOCK)
    conv = te.compute(
        (n_, oh_, ow_, o_),
        lambda n, oh, ow, o: te.sum(phi[i, j] * counts[n, oh, ow, i, j, o].astype("int32").astype("float32"),
                                     axis=[i, j]),
        name=CONV_BLOCK)

    window = None
    if window_coef is not None:
        wkh = te.reduce_axis((0, kh_), "wkh")
        wkw = te.reduce_axis((0, kw_), "wkw")
        wj = te.reduce_axis((0, na), "wj")
        wcw = te.reduce_axis((0, cw_), "wcw")
        window = te.compute(
            (n_, oh_, ow_),
            lambda n, oh, ow: te.sum(window_coef[wj] * popc(A_pad[n, oh * s + wkh, ow * s + wkw, wj, wcw]),
                                     axis=[wkh, wkw, wj, wcw]),
            name="window_count")

    base = None
    if base_term is not None:
        bkh = te.reduce_axis((0, kh_), "bkh")
        bkw = te.reduce_axis((0, kw_), "bkw")

        def inside(oh, ow):
            y, x = oh * s + bkh - p, ow * s + bkw - p
            return tvm.tirx.all(y >= 0, y < h_, x >= 0, x < w_)

        base = te.compute(
            (o_, oh_, ow_),
            lambda o, oh, ow: te.sum(tvm.tirx.Select(inside(oh, ow), base_term[o, bkh, bkw],
                                                     tvm.tirx.const(0.0, "float32")), axis=[bkh, bkw]),
            name="base_level_term")

    def output(n, o, oh, ow):
        y = conv[n, oh, ow, o]
        if window is not None:
            y = y + window[n, oh, ow]
        if base is not None:
            y = y + base[o, oh, ow]
        return y

    return te.compute((n_, o_, oh_, ow_), output, name=OUTPUT_BLOCK)
