"""Bit-plane decompositions and eq. 19, the numpy reference the compiler's kernels are checked against.

eq. 19:  conv(W_bar, A_bar) = sum_ij alpha_i beta_j conv(T_i, V_j)

patvm generalises both sides by an affine term so that ABC-Net's {-1,+1} bases cost one plane each:
  W_bar = w0 + sum_i s_i T_i          (T_i {0,1} planes; w0 = 0 for PA, -sum(alpha) for ABC-Net)
  A_bar = a0 + sum_j d_j P_j          (P_j thermometer planes [x >= v_j]; a0 = levels[0])
Zero padding pads A_bar with 0, which is not a0 when a0 != 0, so
  conv(A_bar, W_bar) = conv(a0 * valid, W_bar)                      (input independent: compile time)
                     + sum_j d_j (w0 * window_count(P_j) + sum_i s_i popcount(P_j & T_i))
where valid is 1 inside the image and 0 in the padding, and window_count counts the set bits of P_j
under the kernel window over all input channels (independent of the output channel).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patvm.approx.staircase import Staircase
from patvm.errors import require

MAX_WEIGHT_VALUES = 16


@dataclass(frozen=True)
class WeightPlanes:
    """W_bar = offset + sum_p scales[p] * planes[p], exactly."""

    offset: float
    scales: np.ndarray   # [P] float64
    planes: np.ndarray   # [P, *W.shape] bool
    kind: str            # "one-hot" (PA: one plane per non-zero value) or "basis" ({-1,+1} bases)

    @property
    def count(self) -> int:
        return int(self.scales.shape[0])

    @property
    def cost(self) -> int:
        """Planes, an offset counting as one more: its window counts cost little (once per output pixel,
        not per channel) but not nothing, so a tie goes to the decomposition without one."""
        return self.count + (self.offset != 0)

    def reconstruct(self) -> np.ndarray:
        return self.offset + np.tensordot(self.scales, self.planes.astype(np.float64), axes=1)


def _subset_sum_generators(diffs: np.ndarray, tol: float) -> list[float] | None:
    """Generators g with {sum of subsets of g} == {0} + diffs (sorted, distinct), or None."""
    generators, reachable = [], np.zeros(1)
    for d in diffs:
        if np.min(np.abs(reachable - d)) <= tol:
            continue
        generators.append(float(d))
        reachable = np.concatenate([reachable, reachable + d])
    target = np.concatenate([[0.0], diffs])
    if len(reachable) != len(target):
        return None
    if np.max(np.abs(np.sort(reachable) - np.sort(target))) > tol:
        return None
    return generators


def decompose_weights(w_bar: np.ndarray, max_values: int = MAX_WEIGHT_VALUES) -> WeightPlanes:
    """Fewest {0,1} planes that reproduce a tensor of few distinct values.

    One-hot: a plane per value other than the offset (0 when 0 occurs, else the most frequent value).
    Basis: when the K = 2^b values are the subset sums of b generators over the smallest value (ABC-Net),
    b planes, taken only when it reproduces every value exactly in float64.
    Binary: when the values are evenly spaced (lo + k*d, every integer quantizer, e.g. the 7 values of a
    narrow-range 3-bit one), the bits of k: ceil(log2(K)) planes with scales d * 2^b. The fewest planes
    win, an offset counting as one more (WeightPlanes.cost).
    """
    w = np.asarray(w_bar, np.float32)
    values, inverse, counts = np.unique(w, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(w.shape)
    require(len(values) <= max_values,
            f"weights have {len(values)} distinct values, more than the {max_values} a bit-serial layer takes")
    zero = np.flatnonzero(values == 0)
    base = int(zero[0]) if zero.size else int(np.argmax(counts))
    others = [k for k in range(len(values)) if k != base]
    best = WeightPlanes(float(values[base]), np.array([float(values[k]) - float(values[base]) for k in others]),
                        np.stack([inverse == k for k in others]) if others else np.zeros((0,) + w.shape, bool),
                        "one-hot")
    if len(values) >= 4:
        lo = float(values[0])
        diffs = values[1:].astype(np.float64) - lo
        tol = 1e-6 * max(1.0, float(np.max(np.abs(values))))
        gens = _subset_sum_generators(diffs, tol)
        if gens is not None and len(gens) + (lo != 0) < best.cost:
            # the bit pattern of each value: greedy from the largest generator down is unique here
            bits = np.zeros((len(gens), len(values)), bool)
            for k, d in enumerate(values.astype(np.float64) - lo):
                rest = d
                for g in reversed(range(len(gens))):
                    if rest - gens[g] >= -tol:
                        bits[g, k] = True
                        rest -= gens[g]
            planes = np.stack([bits[g][inverse] for g in range(len(gens))])
            candidate = WeightPlanes(lo, np.asarray(gens), planes, "basis")
            if np.array_equal(candidate.reconstruct(), w.astype(np.float64)):  # exact, or one-hot stays
                best = candidate
    binary = _binary_planes(w, values, inverse)
    if binary is not None and binary.cost < best.cost:
        best = binary
    return best


def _binary_planes(w: np.ndarray, values: np.ndarray, inverse: np.ndarray) -> WeightPlanes | None:
    """The binary decomposition of evenly spaced values (see decompose_weights), or None."""
    if len(values) < 3:
        return None
    lo = float(values[0])
    offsets = values.astype(np.float64) - lo
    step = float(np.min(np.diff(offsets)))
    k = offsets / step
    if not np.array_equal(k, np.rint(k)):
        return None
    bits = int(k[-1]).bit_length()
    codes = np.rint(k).astype(np.int64)[inverse]
    planes = np.stack([(codes >> b) & 1 for b in range(bits)]).astype(bool)
    candidate = WeightPlanes(lo, step * 2.0 ** np.arange(bits), planes, "binary")
    return candidate if np.array_equal(candidate.reconstruct(), w.astype(np.float64)) else None


def conv2d_nchw(x: np.ndarray, w: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Plain direct conv, float64: x [N,C,H,W], w [O,C,KH,KW] -> [N,O,OH,OW] (zero padding)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    O, C, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH = (xp.shape[2] - KH) // stride + 1
    OW = (xp.shape[3] - KW) // stride + 1
    out = np.zeros((x.shape[0], O, OH, OW))
    for kh in range(KH):
        for kw in range(KW):
            patch = xp[:, :, kh:kh + (OH - 1) * stride + 1:stride, kw:kw + (OW - 1) * stride + 1:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, kh, kw], optimize=True)
    return out


def plane_conv2d(x: np.ndarray, staircase: Staircase, w_bar: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """conv(quantize(x), w_bar) computed the bit-serial way (module docstring); float64."""
    wp = decompose_weights(w_bar)
    planes = staircase.thermometer_planes(x)                 # [N, n, C, H, W]
    deltas = staircase.thermometer_deltas()                  # [N] or [C, N]
    a0 = staircase.levels[..., 0].astype(np.float64)         # scalar or [C]
    C = x.shape[1]
    valid = np.ones((1, C) + x.shape[2:]) * (a0.reshape(1, -1, 1, 1) if a0.ndim else a0)
    out = conv2d_nchw(valid, w_bar, stride, pad)
    out = np.repeat(out, x.shape[0], axis=0)            # the bottom-level term is the same for every image
    ones = np.ones((1,) + w_bar.shape[1:])
    for j in range(staircase.N):
        d = deltas[..., j]
        # per-channel deltas are folded into the plane; bit-serial kernels require them equal over C
        plane = planes[j].astype(np.float64) * (d.reshape(1, -1, 1, 1) if np.ndim(d) else d)
        if wp.offset:
            out = out + wp.offset * conv2d_nchw(plane, ones, stride, pad)
        for s, t in zip(wp.scales, wp.planes):
            out = out + s * conv2d_nchw(plane, t.astype(np.float64), stride, pad)
    return out


def pa_eq19_conv2d(w_planes: np.ndarray, alphas: np.ndarray, a_planes: np.ndarray, betas: np.ndarray,
                   stride: int = 1, pad: int = 0) -> np.ndarray:
    """The paper's eq. 19 literally: sum_ij alpha_i beta_j conv(T_i, V_j) with one-hot planes."""
    out = None
    for alpha, t in zip(alphas, w_planes):
        for beta, v in zip(betas, a_planes):
            term = float(alpha) * float(beta) * conv2d_nchw(v.astype(np.float64), t.astype(np.float64), stride, pad)
            out = term if out is None else out + term
    return out


def onehot_activation_planes(staircase: Staircase, x: np.ndarray) -> np.ndarray:
    """The paper's V_j (eq. 18): [v_j <= x < v_{j+1}], [N, *x.shape] bool (per-tensor thresholds)."""
    require(not staircase.per_channel, "one-hot planes here are for per-tensor thresholds")
    therm = staircase.thermometer_planes(x)
    upper = np.concatenate([therm[1:], np.zeros_like(therm[:1])])
    return therm & ~upper
