"""QONNX's quantizers as exact staircases, in qonnx's own arithmetic.

qonnx's reference (qonnx/custom_op/general/{intquant,bipolar_quant,trunc,multithreshold}.py) computes
in numpy with the dtypes of its operands: a float32 input and float32 scale give float32 `x / scale`,
`+ zero_point`, clipping, rounding (np.round: half to even) and `(code - zero_point) * scale`. Each of
these quantizers is a monotone non-decreasing function of x (scales > 0), so it is a staircase
Y = levels[k], k = #(thresholds <= X), and the staircase is found exactly:

    threshold of code c = the smallest float32 x whose code is >= c under that arithmetic
                          (a binary search over the float32 values in order, -inf .. +inf)
    level of code c     = qonnx's output evaluated at that threshold

so a value exactly on a rounding midpoint goes where np.round sends it (the even code), and the float
just below it goes to the code below. `check_staircase` re-evaluates the op at every threshold and at its
float predecessor as a self-check.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# the rounding modes of qonnx.custom_op.general.intquant.resolve_rounding_mode, all monotone
ROUNDING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ROUND": np.round,
    "HALF_EVEN": np.round,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
    "DOWN": np.fix,
    "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
    "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - 0.5),
}

MAX_LEVELS = 256          # an activation staircase holds at most 8-bit quantizers


def min_int(signed: bool, narrow: bool, bits: int) -> int:
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow else 0)
    return 0


def max_int(signed: bool, narrow: bool, bits: int) -> int:
    if signed:
        return 2 ** (bits - 1) - 1
    return 2 ** bits - 1 - (1 if narrow else 0)


def _clip(y: np.ndarray, lo: int, hi: int) -> np.ndarray:
    y = np.where(y > hi, np.asarray(hi).astype(y.dtype), y)
    return np.where(y < lo, np.asarray(lo).astype(y.dtype), y)


@dataclass(frozen=True)
class IntQuant:
    """qonnx Quant / IntQuant: scale, zero_point as arrays (their own dtypes, broadcastable to x)."""

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool
    narrow: bool
    rounding: str

    def codes(self) -> np.ndarray:
        if self.bits == 1 and self.signed:
            return np.array([-1, 1])
        return np.arange(min_int(self.signed, self.narrow, self.bits), max_int(self.signed, self.narrow, self.bits) + 1)

    def code(self, x: np.ndarray) -> np.ndarray:
        y = x / self.scale
        y = y + self.zero_point
        if self.bits == 1 and self.signed:
            ones = np.ones(y.shape, dtype=y.dtype)
            return np.where(y >= 0.0, ones, -ones)
        y = _clip(y, min_int(self.signed, self.narrow, self.bits), max_int(self.signed, self.narrow, self.bits))
        return ROUNDING[self.rounding](y)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((self.code(x) - self.zero_point) * self.scale).astype(np.float32)

    def integer(self, x: np.ndarray) -> np.ndarray:
        """code - zero_point (the integer weight a per-channel scale multiplies), float32."""
        return (self.code(x) - self.zero_point).astype(np.float32)


@dataclass(frozen=True)
class BipolarQuant:
    scale: np.ndarray

    def codes(self) -> np.ndarray:
        return np.array([-1, 1])

    def code(self, x: np.ndarray) -> np.ndarray:
        ones = np.ones(x.shape, dtype=x.dtype)
        return np.where(x >= 0.0, ones, -ones)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (self.code(x) * self.scale).astype(np.float32)

    def integer(self, x: np.ndarray) -> np.ndarray:
        return self.code(x).astype(np.float32)


@dataclass(frozen=True)
class Trunc:
    """qonnx Trunc version 2 (inputs x, scale, zero_point, input_bit_width, output_scale, output_bit_width)."""

    scale: np.ndarray
    zero_point: np.ndarray
    output_scale: np.ndarray
    output_bits: int
    signed: bool
    narrow: bool
    rounding: str

    def _trunc_scale(self):
        return 2 ** np.round(np.log2(self.output_scale / self.scale))

    def codes(self) -> np.ndarray:
        return np.arange(min_int(self.signed, self.narrow, self.output_bits),
                         max_int(self.signed, self.narrow, self.output_bits) + 1)

    def code(self, x: np.ndarray) -> np.ndarray:
        y = x / self.scale
        y = y + self.zero_point
        y = np.round(y)
        y = y / self._trunc_scale()
        y = _clip(
            y,
            min_int(self.signed, self.narrow, self.output_bits),
            max_int(self.signed, self.narrow, self.output_bits),
        )
        return ROUNDING[self.rounding](y)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.code(x) - self.zero_point / self._trunc_scale()
        return (y * self.output_scale).astype(np.float32)


# ------------------------------------------------------------------------------ float32 in order
_KEY_INF = 0x7F800000


def float_keys(x: np.ndarray) -> np.ndarray:
    """int64 keys in the order of the float32 values (-0.0 and +0.0 share key 0)."""
    bits = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def from_keys(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, np.int64)
    bits = np.where(keys >= 0, keys, (-keys) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


def smallest_reaching(code: Callable[[np.ndarray], np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Per element of `targets` ([K, C]): the smallest float32 x in [-inf, +inf] with code(x) >= target,
    code evaluated on [K, C] arrays (channel c on the last axis). NaN where even +inf does not reach it."""
    lo = np.full(targets.shape, -_KEY_INF - 1, np.int64)       # code(lo) < target by convention
    hi = np.full(targets.shape, _KEY_INF, np.int64)
    with np.errstate(all="ignore"):
        reached = code(from_keys(hi)) >= targets
        while np.any(hi - lo > 1):
            mid = (lo + hi) // 2
            ok = code(from_keys(mid)) >= targets
            hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    x = from_keys(hi)
    return np.where(reached, x, np.float32(np.nan))


def staircase_of(op, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds [C, N], levels [C, N+1]) of a monotone op whose parameters broadcast as [C] (or scalar).

    Codes that no float reaches, or that share their threshold with the next code (the op jumps over
    them), have no interval of their own and are dropped; raises ValueError when the channels then
    disagree on the number of steps or a step is reached only at +inf."""
    codes = op.codes().astype(np.float64)
    targets = np.broadcast_to(codes[1:, None], (len(codes) - 1, channels))
    thr = smallest_reaching(op.code, targets).T                      # [C, K-1]
    with np.errstate(all="ignore"):
        bottom = op(np.full((1, channels), -np.inf, np.float32))[0]  # [C]
        levels = op(np.ascontiguousarray(thr.T)).T                   # [C, K-1]
    rows_t, rows_l = [], []
    for c in range(channels):
        t, lv = thr[c], levels[c]
        keep = ~np.isnan(t)
        keep[:-1] &= t[:-1] != t[1:]            # a jump over a code: keep the last code at that x
        t, lv = t[keep], lv[keep]
        if np.any(np.isinf(t)):
            raise ValueError("a level is reached only at +inf")
        rows_t.append(t)
        rows_l.append(np.concatenate([[bottom[c]], lv]))
    if len({len(t) for t in rows_t}) != 1:
        raise ValueError("channels have different numbers of steps")
    if len(rows_t[0]) == 0:
        raise ValueError("the quantizer has a single level (a constant)")
    return np.array(rows_t, np.float32), np.array(rows_l, np.float32)


def check_staircase(op, thresholds: np.ndarray, levels: np.ndarray) -> bool:
    """The op reproduces the staircase at every threshold and at the float just below it."""
    below = np.nextafter(thresholds, np.float32(-np.inf))
    with np.errstate(all="ignore"):
        at = op(np.ascontiguousarray(thresholds.T)).T
        under = op(np.ascontiguousarray(below.T)).T
    return bool(np.array_equal(at, levels[:, 1:]) and np.array_equal(under, levels[:, :-1]))


@dataclass(frozen=True)
class LinearQuant:
    """ONNX QuantizeLinear [-> Clip] -> DequantizeLinear as onnxruntime computes it in float32:
    code = clamp(nearbyint(x / scale) + zero_point, lo, hi); y = (code - out_zero_point) * out_scale."""

    scale: np.ndarray
    zero_point: np.ndarray
    lo: int
    hi: int
    out_scale: np.ndarray
    out_zero_point: np.ndarray

    def codes(self) -> np.ndarray:
        return np.arange(self.lo, self.hi + 1)

    def code(self, x: np.ndarray) -> np.ndarray:
        y = np.round(x / self.scale) + self.zero_point.astype(np.float32)
        return _clip(y, self.lo, self.hi)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((self.code(x) - self.out_zero_point.astype(np.float32)) * self.out_scale).astype(np.float32)

    def integer(self, x: np.ndarray) -> np.ndarray:
        return (self.code(x) - self.out_zero_point.astype(np.float32)).astype(np.float32)


@dataclass(frozen=True)
class FoldedBatchNorm:
    """A staircase after BatchNormalization (and an optional ReLU), as a function of y' = sign * y, the
    BatchNorm's input with the channels of negative BN scale negated (so that it is non-decreasing).

    onnxruntime's BatchNormalization (which qonnx's executor runs) is, bit for bit in float32,
    a = gamma * (1 / sqrt(var + eps)), b = beta - mean * a, BN(y) = y * a + b (checked in the tests)."""

    a: np.ndarray          # [C] float32
    b: np.ndarray          # [C] float32
    sign: np.ndarray       # [C] float32, +-1
    relu: bool
    thresholds: np.ndarray  # [C, N] of the staircase on BN(y)
    levels: np.ndarray      # [C, N+1]

    @staticmethod
    def coefficients(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
        f32 = np.float32
        inv = f32(1) / np.sqrt(np.asarray(var, f32) + f32(eps))
        a = np.asarray(gamma, f32) * inv
        return a, np.asarray(beta, f32) - np.asarray(mean, f32) * a

    def code(self, y: np.ndarray) -> np.ndarray:
        """BN (and ReLU) of y = sign * y', on [K, C] arrays; the staircase compares this with its thresholds."""
        z = (y * self.sign) * self.a + self.b
        return np.maximum(z, np.float32(0)) if self.relu else z

    def __call__(self, y: np.ndarray) -> np.ndarray:
        from patvm.approx.staircase import staircase_quantize
        return staircase_quantize(self.code(y), self.thresholds, self.levels, axis=1)

    def folded(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(thresholds on y' [C, N], levels [C, N+1]), or None where a step cannot be a finite threshold
        (a BN scale of 0, a step every y' reaches, two steps at one y')."""
        if np.any(self.a == 0):
            return None
        thr = smallest_reaching(self.code, np.ascontiguousarray(self.thresholds.T)).T
        if not np.all(np.isfinite(thr)) or np.any(np.diff(thr, axis=1) <= 0):
            return None
        return thr.astype(np.float32), self.levels
