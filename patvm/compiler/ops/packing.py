"""Packing {0,1} planes into 64-bit words along channels.

Layouts (bit k of word cw is channel 64*cw + k; channels past C are 0 bits, which is exact for
{0,1} planes):
  activations  [N, H, W, NA, CW]  uint64   NA thermometer planes [x >= v_j], or with evenly spaced levels
                                           the NA bits of the count of thresholds passed
  weights      [KH, KW, NW, CW, O] uint64  NW weight planes, output channels innermost (vectorised)
"""
from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import te

WORD_BITS = 64
WORD_DTYPE = "uint64"
PACK_BLOCK = "pack_activation_planes"   # the block name the schedules look for


def words_for(channels: int) -> int:
    return (channels + WORD_BITS - 1) // WORD_BITS


def pack_activation_planes(X: te.Tensor, thresholds: te.Tensor, binary_planes: int | None = None,
                           name: str = PACK_BLOCK) -> te.Tensor:
    """X [N, C, H, W] float32 (NCHW, as ONNX), thresholds [C, T] -> [N, H, W, NA, CW] uint64.

    Thermometer (NA = T): bit j = X >= threshold j (NaN compares false, as in the format). Binary
    (NA = binary_planes): bit b of the number of thresholds X reaches (Staircase.binary_planes). A plane
    word is an OR-reduction over its 64 bits.
    """
    n_, c_, h_, w_ = (int(s) for s in X.shape)
    count = int(thresholds.shape[1])
    na = binary_planes or count
    cw_ = words_for(c_)
    k = te.reduce_axis((0, WORD_BITS), "k")
    bit_or = te.comm_reducer(lambda a, b: a | b, lambda t: tvm.tirx.const(0, t), name="bit_or")
    one = tvm.tirx.const(1, WORD_DTYPE)
    zero = tvm.tirx.const(0, WORD_DTYPE)

    def word(n, h, w, j, cw):
        c = cw * WORD_BITS + k
        cc = te.min(c, c_ - 1)  # keep the read in bounds; the bit itself is masked by c < C
        if binary_planes:
            x = X[n, cc, h, w]
            reached = [tvm.tirx.Select(x >= thresholds[cc, t], one, zero) for t in range(count)]
            level = functools.reduce(lambda a, b: a + b, reached)
            set_ = tvm.tirx.all(c < c_, (level >> j.astype(WORD_DTYPE)) & one == one)
        else:
            set_ = tvm.tirx.all(c < c_, X[n, cc, h, w] >= thresholds[cc, j])
        return bit_or(tvm.tirx.Select(set_, one << k.astype(WORD_DTYPE), zero), axis=k)

    return te.compute((n_, h_, w_, na, cw_), word, name=name)


def pack_weight_planes(planes: np.ndarray) -> np.ndarray:
    """planes [NW, O, C, KH, KW] bool -> [KH, KW, NW, CW, O] uint64 (compile time, numpy)."""
    nw, o, c, kh, kw = planes.shape
    cw = words_for(c)
    bits = np.zeros((kh, kw, nw, o, cw * WORD_BITS), np.uint8)
    bits[..., :c] = planes.transpose(3, 4, 0, 1, 2)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    words = np.ascontiguousarray(packed).view(np.uint64)            # [KH, KW, NW, O, CW]
    return np.ascontiguousarray(words.transpose(0, 1, 2, 4, 3))
