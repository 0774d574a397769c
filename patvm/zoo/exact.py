"""Exact mode of the zoo: models whose float32 arithmetic is exact in any evaluation order.

A random zoo network is chaotic: a rounding difference in one conv sum (another summation order, a fused
Conv+BatchNorm) flips a quantizer threshold somewhere, and the flips cascade, so two correct fp32
implementations disagree on most logits. In exact mode every number that enters fp32 arithmetic before
the final GlobalAveragePool is a short dyadic value, and every partial sum fits the 24-bit float32
significand, so sums are exact in ANY order, fused or not, in onnxruntime (im2col + SGEMM, Conv+BN
fusion, NCHWc kernels) and in TVM (BN decomposed, bit-serial planes) alike. Then the only difference
left between two correct implementations is after the pool (the mean and the FC), a few ulps.

What is rounded (`to_dyadic`, one power-of-two grid per tensor, `bits` significant bits at its largest
value), all where the builder sets the parameter:
  inputs        integers in [-64, 64] / 32 (`dyadic_images`; the calibration batch too)
  fp32 convs    the first conv and MobileNet's depthwise convs (FP_WEIGHT_BITS)
  binary convs  PA alphas / ABC alphas (ALPHA_BITS), kept distinct and non-zero, the PA zero piece kept
  quantizers    levels (LEVEL_BITS), distinct, PA bottom level 0; ABC betas are half the rounded gaps.
                Thresholds stay arbitrary float32: a comparison is exact.
  BatchNorm     epsilon 0, var a power of 4 (sqrt exact), gamma absorbs the change and keeps
                GAMMA_BITS significant bits, so gamma / sqrt(var) is exact; mean on a grid of std / 8,
                beta on a grid of 1/16; var at least 1/16 of the layer's median.

The builder proves the bound while it builds (`Grid`, `BitBudget`): for every channel of every activation
it keeps a power of two 2^q that divides every value and an interval [lo, hi] holding the values for ALL
inputs in the input range, and each operation checks that every partial sum, in any order (at most the
sum of the positive terms or of the negative ones), is at most 2^(q+24): convs, BatchNorm in its
decomposed and its Conv-fused forms, residual adds, average pools. Binary convs are also checked in their
bit-plane form (`patvm.approx.planes`), which the bit-serial kernels sum. A model that does not fit is
refused (PatvmError); the worst bit count is stored in the model's metadata (EXACT_BITS_KEY).

Everything after the pool (GlobalAveragePool, FC) is ordinary fp32. Twins (no quantizers, so no bound:
their sums compound through the whole depth) get the rounded first conv, depthwise convs and BatchNorm,
and keep the real binary-layer weights their binary versions approximate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patvm.approx.planes import MAX_WEIGHT_VALUES, decompose_weights
from patvm.errors import require

MANTISSA_BITS = 24       # float32 significand, hidden bit included
INPUT_BOUND = 2.0        # exact-mode inputs: multiples of 2^INPUT_EXPONENT in [-INPUT_BOUND, INPUT_BOUND]
INPUT_EXPONENT = -5
FP_WEIGHT_BITS = 4       # first conv, depthwise convs
ALPHA_BITS = 3           # binary-layer weight scales
LEVEL_BITS = 3           # quantizer levels
GAMMA_BITS = 2           # BatchNorm gamma (significant bits, per channel)
MEAN_STEP = 1 / 8        # BatchNorm mean grid, in units of the (power-of-two) std
BETA_STEP = 1 / 16       # BatchNorm beta grid
VAR_FLOOR = 1 / 16       # BatchNorm var at least this times the layer's median
EXACT_BITS_KEY = "patvm.zoo.exact_bits"
_NO_BITS = 1 << 20       # the "quantum exponent" of 0: divisible by any power of two


def dyadic_images(rng: np.random.Generator, shape) -> np.ndarray:
    """Random exact-mode inputs: integers in [-64, 64] / 32, float32."""
    top = int(INPUT_BOUND * 2.0 ** -INPUT_EXPONENT)
    return (rng.integers(-top, top + 1, size=shape) * 2.0 ** INPUT_EXPONENT).astype(np.float32)


def quantum_exponent(a) -> np.ndarray:
    """Elementwise: the largest q with a / 2^q an integer (_NO_BITS for 0)."""
    a = np.abs(np.asarray(a, np.float64))
    require(bool(np.all(np.isfinite(a))), "exact mode: a non-finite value")
    m, e = np.frexp(a)                                  # a = m 2^e, m in [0.5, 1)
    mi = np.ldexp(m, 53).astype(np.int64)               # exact: 53-bit integer significand
    low = mi & -mi                                      # lowest set bit (0 for a = 0)
    q = e - 53 + (np.frexp(low.astype(np.float64))[1] - 1)
    return np.where(a == 0, _NO_BITS, q).astype(np.int64)


def _grid_exponent(ref: np.ndarray, bits: int) -> np.ndarray:
    """2^e with ref / 2^e in [2^(bits-1), 2^bits): `bits` significant bits at the reference magnitude."""
    ref = np.asarray(ref, np.float64)
    e = np.frexp(np.where(ref > 0, ref, 1.0))[1] - bits
    return np.ldexp(1.0, e)


def to_dyadic(x, bits: int, per_element: bool = False) -> np.ndarray:
    """Round x to `bits` significant bits: one power-of-two grid for the tensor (set by max|x|), or one per
    element. float32 out; values below half the tensor's grid step become 0."""
    x = np.asarray(x, np.float64)
    step = _grid_exponent(np.abs(x) if per_element else np.max(np.abs(x), initial=0.0), bits)
    return (np.round(x / step) * step).astype(np.float32)


def dyadic_ladder(values, bits: int) -> np.ndarray:
    """`to_dyadic` for an increasing sequence that must stay strictly increasing with every sign kept
    (PA alphas, the negatives then the positives; PA levels, 0 first): equal neighbours are pushed apart
    by one grid step, away from 0. A 0 stays 0, a non-zero value does not become 0."""
    v = np.asarray(values, np.float64)
    require(v.ndim == 1 and bool(np.all(np.diff(v) > 0)), "exact mode: a ladder must be strictly increasing")
    step = float(_grid_exponent(np.max(np.abs(v), initial=0.0), bits))
    k = np.round(v / step)
    k = np.where(v > 0, np.maximum(k, 1), np.where(v < 0, np.minimum(k, -1), 0))
    pos = np.flatnonzero(v > 0)
    for a, b in zip(pos[:-1], pos[1:]):
        k[b] = max(k[b], k[a] + 1)
    neg = np.flatnonzero(v < 0)[::-1]
    for a, b in zip(neg[:-1], neg[1:]):
        k[b] = min(k[b], k[a] - 1)
    return (k * step).astype(np.float32)


def dyadic_bases(alphas, bits: int) -> np.ndarray:
    """`to_dyadic` for ABC-Net's basis scales, none of them rounded to 0 or across 0. The zoo's sign bases
    are nested (thresholds shifted by u_i std), so the M + 1 weight values that occur, -sum|alpha| up to
    +sum|alpha| flipping one base at a time, then stay distinct."""
    a = np.asarray(alphas, np.float64)
    step = float(_grid_exponent(np.abs(a).sum(), bits))     # `bits` bits at the largest weight value
    mags = np.maximum(np.round(np.abs(a) / step), 1)
    return (np.where(a < 0, -mags, mags) * step).astype(np.float32)


def batchnorm_params(gamma, beta, mean, var) -> tuple[np.ndarray, ...]:
    """Exact BatchNorm (epsilon 0) normalising like (gamma, beta, mean, var) did, to a few bits:
    var -> the nearest power of 4, gamma *= sqrt(new var / var); returns float32 (gamma, beta, mean, var).

    A variance below VAR_FLOOR x the layer's median counts as that (few calibration samples reach a deep
    layer at small image sizes: a near-constant channel would get a huge scale, and a huge bound)."""
    var = np.asarray(var, np.float64)
    var = np.maximum(var, VAR_FLOOR * np.median(var))
    live = var > 0
    k = np.where(live, np.round(np.log2(np.where(live, var, 1.0)) / 2), 0)
    std = np.ldexp(1.0, k.astype(np.int64))                       # exact sqrt of the new var
    g = np.asarray(gamma, np.float64) * np.where(live, std / np.sqrt(np.where(live, var, 1.0)), 1.0)
    gamma_e = to_dyadic(g, GAMMA_BITS, per_element=True)
    mean_e = np.round(np.asarray(mean, np.float64) / (std * MEAN_STEP)) * (std * MEAN_STEP)
    beta_e = np.round(np.asarray(beta, np.float64) / BETA_STEP) * BETA_STEP
    return gamma_e, beta_e.astype(np.float32), mean_e.astype(np.float32), (std * std).astype(np.float32)


# ---- the bound, carried along the build

@dataclass(frozen=True)
class Grid:
    """Per channel c, for every input in range: the values lie in [lo[c], hi[c]] and are multiples of 2^q[c];
    `sums` bounds every partial sum of the operation that made them (a conv's, before its output)."""

    lo: np.ndarray     # [C] float64
    hi: np.ndarray     # [C] float64
    q: np.ndarray      # [C] int64
    sums: np.ndarray   # [C] float64

    @staticmethod
    def of(lo, hi, q, sums=None) -> Grid:
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        mag = np.maximum(np.abs(lo), np.abs(hi))
        return Grid(lo, hi, np.asarray(q, np.int64), mag if sums is None else np.asarray(sums, np.float64))

    @property
    def mag(self) -> np.ndarray:
        return np.maximum(np.abs(self.lo), np.abs(self.hi))

    def __len__(self) -> int:
        return int(self.lo.shape[0])


def _subset_sum_bound(terms_lo: np.ndarray, terms_hi: np.ndarray, axis) -> np.ndarray:
    """Every partial sum of terms t_k in [lo_k, hi_k], in any order, is within [-negatives, positives]."""
    return np.maximum(np.maximum(terms_hi, 0).sum(axis=axis), np.maximum(-terms_lo, 0).sum(axis=axis))


class BitBudget:
    """Checks every sum against the float32 significand and remembers the worst bit count. One method per
    operation of the zoo's graphs; a `None` grid (not exact mode) passes through as None."""

    def __init__(self):
        self.worst = 0.0

    def check(self, bound, q, what: str) -> None:
        """Sums bounded by `bound` of multiples of 2^q are exact in float32 iff bound <= 2^(q + 24)."""
        bound = np.asarray(bound, np.float64)
        q = np.broadcast_to(np.asarray(q, np.int64), bound.shape)
        live = bound > 0
        if not np.any(live):
            return
        bits = float(np.max(np.log2(bound[live]) - q[live]))
        self.worst = max(self.worst, bits)
        require(bits <= MANTISSA_BITS, f"exact mode cannot hold for this model: {what} needs {bits:.1f} "
                                       f"significand bits (> {MANTISSA_BITS}); fewer weight / activation pieces")

    def input(self, channels: int) -> Grid:
        return Grid.of(np.full(channels, -INPUT_BOUND), np.full(channels, INPUT_BOUND),
                       np.full(channels, INPUT_EXPONENT))

    def quantize(self, grid: Grid | None, levels: np.ndarray) -> Grid | None:
        if grid is None:
            return None
        levels = np.broadcast_to(np.asarray(levels, np.float64), (len(grid), levels.shape[-1]))
        return Grid.of(levels[:, 0], levels[:, -1], quantum_exponent(levels).min(axis=1))

    def conv(self, grid: Grid | None, w: np.ndarray, group: int, binary: bool, what: str) -> Grid | None:
        """A binary conv is bounded in its bit-plane form too (`patvm.approx.planes`): input a0 + sum_j d_j P_j
        (|a0| + sum d = |bottom| + top - bottom), weights |w0| + sum_i |s_i| T_i (ABC-Net's {-1,+1} bases)."""
        if grid is None:
            return None
        w = np.asarray(w, np.float64)
        O = w.shape[0]
        depthwise = group != 1
        if depthwise:   # output channel o reads input channel o
            lo, hi, xq = (a[:, None, None, None] for a in (grid.lo, grid.hi, grid.q))
        else:
            lo, hi, xq = (a[None, :, None, None] for a in (grid.lo, grid.hi, grid.q))
        t_lo, t_hi = np.minimum(w * lo, w * hi), np.maximum(w * lo, w * hi)
        axes = (1, 2, 3)
        sums = _subset_sum_bound(t_lo, t_hi, axes)
        if binary and len(np.unique(w)) <= MAX_WEIGHT_VALUES:   # else the compiler keeps the layer fp32
            wp = decompose_weights(w)
            wmag = abs(wp.offset) + np.tensordot(np.abs(wp.scales), wp.planes.astype(np.float64), axes=1)
            sums = np.maximum(sums, ((np.abs(lo) + hi - lo) * wmag).sum(axis=axes))
            wq = np.full(w.shape, quantum_exponent(np.unique(w)).min())
        else:
            wq = quantum_exponent(w)
        q = np.where(w != 0, wq + xq, _NO_BITS).reshape(O, -1).min(axis=1)
        self.check(sums, q, what)
        return Grid.of(t_lo.sum(axis=axes), t_hi.sum(axis=axes), q, sums)

    def batchnorm(self, grid: Grid | None, gamma, beta, mean, var, what: str) -> Grid | None:
        """Every form: (x - m) / sqrt(v) * g + b, and Conv+BN fused as conv(x, w s) + (b - m s), s = g / sqrt(v)."""
        if grid is None:
            return None
        s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64))
        require(bool(np.all(s > 0)), "exact mode: BatchNorm scales must be positive")
        m, b = np.asarray(mean, np.float64), np.asarray(beta, np.float64)
        qs, qm, qb = quantum_exponent(s), quantum_exponent(m), quantum_exponent(b)
        qxm = np.minimum(grid.q, qm)
        centred = np.maximum(np.abs(grid.lo - m), np.abs(grid.hi - m))
        bias = np.abs(b - m * s)
        lo, hi = (grid.lo - m) * s + b, (grid.hi - m) * s + b
        q = np.minimum(qxm + qs, qb)
        for bound, bq, form in ((grid.sums * s + bias, q, "conv(x, w*s) + bias (Conv+BN fused)"),
                                (centred, qxm, "x-mean"), (centred * s, qxm + qs, "(x-mean)*s"),
                                (np.abs(m * s), qm + qs, "mean*s"), (np.abs(b) + np.abs(m * s), q, "beta-mean*s"),
                                (np.maximum(np.abs(lo), np.abs(hi)), q, "output")):
            self.check(bound, bq, f"{what}: {form}")
        # sums: what a conv that absorbed this BN sums, should it absorb a residual add as well
        return Grid.of(lo, hi, q, np.maximum(grid.sums * s + bias, np.maximum(np.abs(lo), np.abs(hi))))

    def add(self, a: Grid | None, b: Grid | None, what: str) -> Grid | None:
        """A fused Conv+Add sums one operand's terms onto the other: its partial sums are bounded by the
        conv's (`sums`) plus the other operand."""
        if a is None or b is None:
            return None
        out = Grid.of(a.lo + b.lo, a.hi + b.hi, np.minimum(a.q, b.q))
        self.check(np.maximum(a.sums + b.mag, a.mag + b.sums), out.q, what)
        return out

    def relu(self, grid: Grid | None) -> Grid | None:
        if grid is None:
            return None
        return Grid.of(np.maximum(grid.lo, 0), np.maximum(grid.hi, 0), grid.q)

    def avgpool(self, grid: Grid | None, kernel: int, what: str) -> Grid | None:
        if grid is None:
            return None
        n = kernel * kernel
        require(n & (n - 1) == 0, "exact mode: an average pool over a power-of-two window only")
        sums = _subset_sum_bound(n * grid.lo, n * grid.hi, ())
        self.check(sums, grid.q, what)
        return Grid.of(grid.lo, grid.hi, grid.q - (n.bit_length() - 1))

    def concat(self, grids: list[Grid | None]) -> Grid | None:
        if any(g is None for g in grids):
            return None
        return Grid.of(*(np.concatenate([getattr(g, f) for g in grids]) for f in ("lo", "hi", "q")))
