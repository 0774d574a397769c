"""The bit-serial conv2d (dense is its 1x1 case), AND + popcount with combined scales (eq. 19).

    y[n,o,oh,ow] = sum_{i,j} phi[i,j] * sum_{kh,kw,cw} popcount(A[n, oh*s+kh-p, ow*s+kw-p, j, cw] & W[kh,kw,i,cw,o])
                 + base_table[o, row_class[oh], col_class[ow]]                      (bottom level a0 != 0)

phi[i,j] = s_i * d_j (weight plane scale x activation plane step). A weight offset w0 != 0 (ABC-Net's
{-1,+1} bases) is one more weight plane, all ones, with scale w0: its counts are the window counts of the
activation planes, computed in the same register-blocked loop as the others. The bottom-level term
sum_{kh,kw inside the image} sum_c a0[c] W_bar[o,c,kh,kw] depends only on how far a window reaches into
the padding, so it is a compile-time table per border class of rows and columns (interior positions share
one class). Padded positions hold 0 bits, and the table only counts positions inside the image, so zero
padding is exact also when 0 is not an activation level (ABC-Net). See patvm.approx.planes for the
derivation.

Block names are the contract with patvm.compiler.schedules: "bitserial_counts" (uint64 popcount sums
per plane pair), "bitserial_conv" (their phi-weighted sum), "bitserial_output".
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


def border_classes(size: int, geometry: ConvGeometry) -> tuple[list[int], list[tuple[int, int]]]:
    """For each output row (or column): the index of its class, and the classes as (kernel taps clipped
    at the start, at the end). Interior outputs, whose window lies inside the image, are class (0, 0)."""
    k, s, p = geometry.kernel, geometry.stride, geometry.pad
    clipped = [(max(0, p - o * s), max(0, o * s - p + k - size)) for o in range(geometry.out_size(size))]
    classes = sorted(set(clipped))
    return [classes.index(c) for c in clipped], classes


def bitserial_conv2d(A: te.Tensor, Wp: te.Tensor, phi: te.Tensor, geometry: ConvGeometry,
                     base: tuple[te.Tensor, te.Tensor, te.Tensor] | None = None) -> te.Tensor:
    """A [N,H,W,NA,CW] u64, Wp [K,K,NW,CW,O] u64, phi [NW,NA] f32 -> y [N,O,OH,OW] f32 (NCHW).
    base: (base_table [O, R, C] f32, row_class [OH] i32, col_class [OW] i32), or None when a0 = 0."""
    n_, h_, w_, na, cw_ = (int(s) for s in A.shape)
    kh_, kw_, nw, _, o_ = (int(s) for s in Wp.shape)
    s, p = geometry.stride, geometry.pad
    oh_, ow_ = geometry.out_size(h_), geometry.out_size(w_)
    A_pad = topi.nn.pad(A, [0, p, p, 0, 0], [0, p, p, 0, 0], name="A_pad") if p else A
    if base is not None:   # the class tables are read without bounds checks
        assert (int(base[1].shape[0]), int(base[2].shape[0])) == (oh_, ow_), "border classes of another shape"

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
    conv = te.compute(
        (n_, oh_, ow_, o_),
        lambda n, oh, ow, o: te.sum(phi[i, j] * counts[n, oh, ow, i, j, o].astype("int32").astype("float32"),
                                     axis=[i, j]),
        name=CONV_BLOCK)

    def output(n, o, oh, ow):
        y = conv[n, oh, ow, o]
        if base is not None:
            table, row_class, col_class = base
            y = y + table[o, row_class[oh], col_class[ow]]
        return y

    return te.compute((n_, o_, oh_, ow_), output, name=OUTPUT_BLOCK)
