"""Differential fuzzing: random small PA-ONNX graphs, compiled by patvm and run by onnxruntime.

    python -m patvm.fuzz --graphs 500 --seed 0                   # the long campaign (docs/reliability.md)
    python -m patvm.fuzz --graphs 1 --seed 0 --start 17 --save-failures out/ --localize   # one graph again

Graph `i` of seed `s` is generated from `numpy.random.default_rng([s, i])` alone, so any graph of a
campaign can be rebuilt on its own. Two modes:

  dyadic  every number (inputs k/8, thresholds, levels, weights, biases) is a dyadic rational and the
          generator bounds every intermediate sum (`Tensor.exp`, `Tensor.bound`), so fp32 arithmetic is
          exact in any summation order: patvm's output must equal onnxruntime's bit for bit
          (`np.array_equal`, NaN == NaN). Any difference is a bug.
  float   random float weights (patvm.approx PA / ABC approximations), thresholds and levels, BatchNorm,
          at most two binary layers: top-1 agreement and at most 0.1% of the elements off by more than
          1e-3 of the output range (threshold flips caused by fp32 rounding are the only tolerated
          difference).

A graph is a chain of steps over a pool of live tensors: binary conv / dense layers (PA with even M in
2..8, ABC-like {-a,+a} bases, offset bases, a few arbitrary values, all-equal weights), residual adds
(also ResNet's downsampling pair fed by one quantizer), concats, pools, ReLU, and layers that must stay
fp32 (more than 16 weight values, grouped / depthwise / dilated convs, unquantized convs, a quantizer
feeding a Flatten, per-channel tables whose level steps differ). Thresholds are drawn from the values
the tensor really takes (onnxruntime probes the partial graph), so input elements hit them exactly.

Structural choices go through a `Chooser`: `RngChooser` (numpy, the campaign and the CI slice) or
`HypothesisChooser` (hypothesis `data.draw`, so hypothesis can shrink a failing graph).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx

from patvm.approx import Staircase, abc_activation_staircase, approximate_weights_abc, approximate_weights_pa
from patvm.approx.planes import MAX_WEIGHT_VALUES, decompose_weights
from patvm.onnx_format import GraphWriter

MODES = ("dyadic", "float")
EXACT_BITS = 23          # |value| * 2**exp must stay below 2**EXACT_BITS (fp32 has a 24-bit significand)
MAX_FEATURES = 400       # widest dense input the generator flattens to
MAX_CHANNELS = 20


# ---------------------------------------------------------------------------------------------- choosers
class RngChooser:
    """Structural choices from a numpy Generator (deterministic for a seed)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def bool(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, options, weights=None):
        options = list(options)
        if weights is None:
            return options[self.int(0, len(options) - 1)]
        w = np.asarray(weights, np.float64)
        return options[int(self.rng.choice(len(options), p=w / w.sum()))]


class HypothesisChooser:
    """Structural choices drawn from hypothesis (shrinks towards the first option / the low end);
    bulk arrays come from a numpy Generator seeded by one more draw."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self._st = st
        self.data = data
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="array seed"))

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self._st.integers(lo, hi))

    def bool(self, p: float = 0.5) -> bool:
        return self.data.draw(self._st.booleans())

    def choice(self, options, weights=None):
        options = list(options)
        return options[self.int(0, len(options) - 1)]


# ---------------------------------------------------------------------------------------------- cases
@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    exp: int = 0            # dyadic: every value is a multiple of 2**-exp
    bound: float = 0.0      # dyadic: max |value|, also of every partial sum that produced it
    depth: int = 0          # quantizers on the longest path from the input (float mode keeps it <= 2)
    stair: Staircase | None = None   # for a quantizer output: its staircase
    special: bool = False   # may hold NaN / +-inf: no MaxPool reads it (onnxruntime's NaN answer depends on
                            # its place in the window: tests/reliability/test_regressions.py), quantizers map
                            # it to levels


@dataclass
class FuzzCase:
    seed: int | None
    index: int | None
    mode: str
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    steps: list[str]
    strategy: str = "bit-serial"     # patvm.compile's strategy: every exact match bit-serial by default

    @property
    def label(self) -> str:
        return f"seed {self.seed} graph {self.index} ({self.mode}, strategy {self.strategy})"


@dataclass
class Outcome:
    case: FuzzCase
    status: str                      # pass | flip | mismatch | compile-error | run-error | reference-error
    detail: str = ""
    layers: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "flip")   # flip: a float-mode threshold flip from fp32 rounding

    @property
    def bit_serial(self) -> int:
        return sum(1 for la in self.layers if la.get("strategy") == "bit-serial")

    def signature(self) -> str:
        """A coarse key grouping failures that are probably one bug."""
        head = self.detail.split(":", 1)[0] if self.status != "mismatch" else ""
        return f"{self.status} {head}".strip()


def dyadic_exp(values) -> int:
    """The smallest e with values * 2**e all integers (capped at 60: not dyadic)."""
    v = np.abs(np.asarray(values, np.float64).ravel())
    v = v[np.isfinite(v) & (v != 0)]
    for e in range(61):
        s = v * 2.0**e
        if np.all(s == np.floor(s)):
            return e
    return 60


def representable(bound: float, exp: int) -> bool:
    return bound * 2.0**exp < 2.0**EXACT_BITS


def grid(rng, shape, den: int, span: int, nonzero: bool = False) -> np.ndarray:
    """Dyadic values k/den, k in [-span, span]."""
    k = rng.integers(-span, span + 1, size=shape)
    if nonzero:
        k = np.where(k == 0, rng.choice([-1, 1], size=shape), k)
    return (k / den).astype(np.float32)


# ---------------------------------------------------------------------------------------------- generator
class GraphGenerator:
    """Builds one random graph; `build()` returns a FuzzCase."""

    def __init__(self, chooser, mode: str = "dyadic", max_steps: int | None = None, max_batch: int = 4,
                 max_size: int = 10):
        assert mode in MODES
        self.c = chooser
        self.rng = chooser.rng
        self.mode = mode
        self.dyadic = mode == "dyadic"
        self.max_steps = max_steps if max_steps is not None else (6 if self.dyadic else 4)
        self.max_batch = max_batch
        self.max_size = max_size
        self.g = GraphWriter("fuzz")
        self.pool: list[Tensor] = []
        self.quantizers: dict[str, list[Tensor]] = {}   # tensor name -> its quantizer outputs
        self.steps: list[str] = []
        self.inputs: dict[str, np.ndarray] = {}
        self.consumed: set[str] = set()                 # tensors some later node reads
        self._probe_cache: dict[str, np.ndarray] = {}
        self.wide = False

    # ---- probing the partial graph (thresholds are drawn from the values a tensor really takes)
    def probe(self, t: Tensor) -> np.ndarray:
        if t.name not in self._probe_cache:
            nodes, outputs = len(self.g.nodes), list(self.g.outputs)
            self.g.output(t.name, list(t.shape), name="fuzz_probe")
            try:
                model = self.g.model(check=False)
            finally:
                del self.g.nodes[nodes:]
                self.g.outputs[:] = outputs
            self._probe_cache[t.name] = onnxruntime_outputs(model, self.inputs)[0]
        return self._probe_cache[t.name]

    # ---- tensors
    def derived(self, name: str, shape, parts: list[Tensor], exp: int | None = None,
                bound: float | None = None) -> Tensor:
        """A tensor computed from `parts`: exp/bound default to their max (concat, pool, relu)."""
        self.consumed.update(p.name for p in parts)
        return Tensor(name, tuple(shape), max(p.exp for p in parts) if exp is None else exp,
                      max(p.bound for p in parts) if bound is None else bound, max(p.depth for p in parts),
                      special=any(p.special for p in parts))

    def relu(self, t: Tensor) -> Tensor:
        return self.derived(self.g.relu(t.name), t.shape, [t])

    def add(self, a: Tensor, b: Tensor) -> Tensor | None:
        exp, bound = max(a.exp, b.exp), a.bound + b.bound
        if self.dyadic and not representable(bound, exp):
            return None
        first, second = (a, b) if self.c.bool() else (b, a)
        return self.derived(self.g.add(first.name, second.name), a.shape, [a, b], exp, bound)

    # ---- tables
    def _thresholds_from(self, values: np.ndarray, n: int) -> np.ndarray:
        """n strictly increasing float32 thresholds; in dyadic mode some are values the tensor takes."""
        v = np.unique(values[np.isfinite(values)].astype(np.float32))
        picks: set[float] = set()
        if self.dyadic:
            lo, hi = (float(v.min()), float(v.max())) if v.size else (-1.0, 1.0)
            span = max(hi - lo, 0.5)
            step = 2.0 ** math.floor(math.log2(span / 8))
            hits = self.c.int(0, n) if v.size else 0
            if hits:
                picks.update(float(x) for x in self.rng.choice(v, size=min(hits, v.size), replace=False))
            for _ in range(200):
                if len(picks) >= n:
                    break
                x = lo - step + self.rng.random() * (span + 2 * step)
                picks.add(float(np.float32(round(x / step) * step)))
            extra = 1
            while len(picks) < n:
                picks.add(float(np.float32(hi + extra * step)))
                extra += 1
        else:
            if v.size:
                qs = np.quantile(v, np.sort(self.rng.random(n)))
                scale = float(np.std(v)) or 1.0
            else:
                qs, scale = np.sort(self.rng.standard_normal(n)), 1.0
            picks.update(float(np.float32(q + 0.01 * scale * self.rng.standard_normal())) for q in qs)
            while len(picks) < n:
                picks.add(float(np.float32(self.rng.standard_normal() * scale)))
        out = np.array(sorted(picks), np.float32)
        if out.size > n:
            out = np.sort(self.rng.choice(out, size=n, replace=False))
        return out

    def _levels(self, n: int, style: str) -> np.ndarray:
        rng = self.rng
        if not self.dyadic:   # random levels, on a 2**-10 grid so that a per-channel bottom keeps the steps equal
            if style == "pa":
                lv = np.concatenate([[0.0], np.sort(np.abs(rng.standard_normal(n))) + 0.1])
            elif style == "abc":
                _, lv = abc_activation_staircase(np.linspace(0.4, -0.4, n), np.abs(rng.standard_normal(n)) + 0.1)
            else:
                lv = rng.standard_normal(n + 1)
            return (np.round(np.asarray(lv, np.float64) * 1024) / 1024).astype(np.float32)
        if style == "pa":       # 0 below the first threshold, increasing
            return np.concatenate([[0.0], np.cumsum(rng.integers(1, 5, size=n)) / 8]).astype(np.float32)
        if style == "abc":      # sum_n beta_n H(x): bottom level -sum(beta), 0 usually absent
            t = np.arange(n) / 4.0          # only the levels are used; the thresholds are drawn separately
            _, lv = abc_activation_staircase(0.5 - t, rng.integers(1, 5, size=n) / 8)
            return lv
        if style == "sign":     # {-a, +a} (N = 1) or a symmetric staircase around 0
            a = rng.integers(1, 5) / 4
            return ((np.arange(n + 1) - n / 2) * a * (2 if n == 1 else 1)).astype(np.float32)
        # "offset": any bottom level, steps of either sign (non-monotone)
        return np.concatenate([[rng.integers(-8, 9) / 8], rng.integers(-8, 9, size=n) / 8]).cumsum().astype(np.float32)

    def staircase(self, t: Tensor) -> tuple[Staircase, str]:
        n = self.c.int(1, 7)
        style = self.c.choice(["pa", "abc", "offset", "sign"], [4, 3, 2, 1])
        values = self.probe(t)
        channels = t.shape[1]
        levels = self._levels(n, style)
        if not self.c.bool(0.35):
            return Staircase(self._thresholds_from(values, n), levels), f"{style} N={n}"
        by_channel = np.moveaxis(values, 1, 0).reshape(channels, -1)
        thr = np.stack([self._thresholds_from(by_channel[ch], n) for ch in range(channels)])
        varied = self.c.choice(["same", "bottom", "steps"], [2, 3, 1])
        lv = np.repeat(levels[None, :], channels, axis=0)
        if varied == "bottom":          # per-channel bottom level, equal steps: still bit-serial
            shift = grid(self.rng, (channels, 1), 8 if self.dyadic else 1024, 8 if self.dyadic else 2048)
            lv = lv + shift.astype(np.float32)
        elif varied == "steps":          # steps differ per channel: must stay fp32
            lv = np.stack([self._levels(n, style) for _ in range(channels)])
        return Staircase(thr.astype(np.float32), lv.astype(np.float32)), f"{style} N={n} per-channel({varied})"

    def quantize(self, t: Tensor) -> tuple[Tensor, str]:
        existing = self.quantizers.get(t.name, [])
        if existing and self.c.bool(0.5):
            return self.c.choice(existing), "shared quantizer"
        stair, desc = self.staircase(t)
        name = self.g.pa_quantize(t.name, stair)
        self.consumed.add(t.name)
        q = Tensor(name, t.shape, dyadic_exp(stair.levels), float(np.abs(stair.levels).max()), t.depth + 1, stair)
        self.quantizers.setdefault(t.name, []).append(q)
        return q, desc

    # ---- weights
    def binary_weight(self, shape) -> tuple[np.ndarray, str]:
        """W_bar with at most 16 distinct values."""
        rng = self.rng
        if not self.dyadic:
            w = rng.standard_normal(shape).astype(np.float32) * 0.5
            if self.c.bool():
                m = self.c.choice([2, 4, 6, 8])
                return approximate_weights_pa(w, m).w_bar, f"PA M={m}"
            m = self.c.int(1, 4)
            return approximate_weights_abc(w, m).w_bar, f"ABC M={m}"
        kind = self.c.choice(["pa", "abc", "offset", "few", "equal", "single"], [5, 4, 2, 2, 1, 1])
        if kind == "pa":        # M non-zero values and 0
            m = self.c.choice([2, 4, 6, 8])
            values = rng.choice(np.setdiff1d(np.arange(-12, 13), [0]), size=m, replace=False) / 8
            p = np.full(m + 1, 0.7 / m)
            p[0] = 0.3
            w = rng.choice(np.concatenate([[0.0], values]), size=shape, p=p)
            return w.astype(np.float32), f"PA M={m}"
        if kind == "abc":       # sum_i alpha_i B_i, B_i in {-1, +1}
            m = self.c.int(1, 4)
            alphas = rng.choice(np.arange(1, 9), size=m, replace=False) / 8
            bases = rng.choice([-1.0, 1.0], size=(m,) + tuple(shape))
            return np.tensordot(alphas, bases, axes=1).astype(np.float32), f"ABC M={m}"
        if kind == "offset":    # w0 + sum_i s_i T_i, T_i in {0, 1}, w0 != 0
            m = self.c.int(1, 3)
            w0 = grid(rng, (), 8, 8, nonzero=True)
            scales = grid(rng, (m,), 8, 8, nonzero=True)
            planes = rng.random((m,) + tuple(shape)) < 0.5
            return (w0 + np.tensordot(scales, planes.astype(np.float32), axes=1)).astype(np.float32), f"offset M={m}"
        if kind == "few":
            k = self.c.int(1, MAX_WEIGHT_VALUES)
            values = rng.choice(np.arange(-16, 17), size=k, replace=False) / 8
            return rng.choice(values, size=shape).astype(np.float32), f"{k} values"
        if kind == "equal":
            return np.full(shape, grid(rng, (), 8, 8), np.float32), "all equal"
        w = np.zeros(shape, np.float32)
        w.flat[int(rng.integers(w.size))] = grid(rng, (), 8, 8, nonzero=True)
        return w, "single non-zero"

    def many_values_weight(self, shape) -> np.ndarray:
        """More than 16 distinct values (the caller makes the tensor large enough)."""
        size = int(np.prod(shape))
        values = np.arange(-40, 41) / 16 if self.dyadic else self.rng.standard_normal(200) * 0.3
        w = self.rng.choice(values, size=size)
        k = min(size, MAX_WEIGHT_VALUES + 1 + self.c.int(0, 8))
        w[:k] = self.rng.choice(values, size=k, replace=False)   # at least k distinct values
        return self.rng.permutation(w).reshape(shape).astype(np.float32)

    def bias(self, out: int) -> np.ndarray | None:
        if not self.c.bool(0.6):
            return None
        return grid(self.rng, (out,), 8, 16) if self.dyadic else self.rng.standard_normal(out).astype(np.float32)

    # ---- exactness bookkeeping (dyadic mode)
    def linear_bound(self, x: Tensor, w2: np.ndarray, bias) -> tuple[int, float] | None:
        """(exp, bound) of x @ w2.T + bias, w2 [O, K]; None when fp32 could round somewhere.

        When x is a quantizer output, also the bound of the bit-serial kernel's partial sums
        (sum_ij phi_ij count_ij + sum_j w0 d_j window_j + base term, patvm.compiler.ops.bitserial)."""
        if not self.dyadic:
            return 0, 0.0
        b_exp = dyadic_exp(bias) if bias is not None else 0
        b_max = float(np.abs(bias).max()) if bias is not None else 0.0
        exp = max(x.exp + dyadic_exp(w2), b_exp)
        bound = x.bound * float(np.abs(w2).sum(axis=1).max()) + b_max
        stair = x.stair
        if stair is not None and len(np.unique(w2)) <= MAX_WEIGHT_VALUES:
            wp = decompose_weights(w2)
            deltas = stair.thermometer_deltas()
            d = float(np.abs(deltas).sum(axis=-1).max())
            a0 = float(np.abs(stair.levels[..., 0]).max())
            k = w2.shape[1]
            inner = k * (float(np.abs(wp.scales).sum()) + abs(wp.offset)) * d + k * a0 * float(np.abs(w2).max())
            bound = max(bound, inner + b_max)
            exp = max(exp, dyadic_exp(np.append(wp.scales, wp.offset)) + dyadic_exp(deltas),
                      dyadic_exp(stair.levels[..., 0]) + dyadic_exp(w2))
        return (exp, bound) if representable(bound, exp) else None

    # ---- steps
    def out_channels(self, most: int) -> int:
        """1..most; in a wide graph sometimes 16 / 24 / 32 (the CPU schedules' wider output-channel tiles)."""
        if self.wide and self.c.bool(0.4):
            return self.c.choice([16, 24, 32])
        return self.c.int(1, most)

    def emit(self, t: Tensor, desc: str) -> Tensor:
        self.pool.append(t)
        self.steps.append(desc)
        return t

    def _conv_geometry(self, h: int, w: int) -> tuple[int, int, int]:
        for _ in range(20):
            k, s, p = self.c.int(1, 5), self.c.int(1, 3), self.c.int(0, 2)
            if h + 2 * p >= k and w + 2 * p >= k:
                return k, s, p
        return 1, 1, 0

    def conv_layer(self, src: Tensor, out: int, k: int, s: int, p: int, weight: np.ndarray, group: int = 1,
                   dilation: int = 1, relu: bool | None = None) -> Tensor | None:
        """Conv (+ bias) (+ ReLU) on `src` (a quantizer output for a binary layer); None if not exact."""
        b = self.bias(out)
        eb = self.linear_bound(src, weight.reshape(out, -1), b)
        if eb is None:
            return None
        name = self.g.conv(src.name, weight, b, stride=s, pad=p, group=group, dilation=dilation)
        n, _, h, w = src.shape
        ek = dilation * (k - 1) + 1
        shape = (n, out, (h + 2 * p - ek) // s + 1, (w + 2 * p - ek) // s + 1)
        y = self.derived(name, shape, [src], *eb)
        if relu is None:
            relu = self.c.bool(0.4)
        return self.relu(y) if relu else y

    def step_binary_conv(self, x: Tensor) -> Tensor | None:
        q, qdesc = self.quantize(x)
        _, c, h, w = x.shape
        out = self.out_channels(9)
        k, s, p = self._conv_geometry(h, w)
        weight, wdesc = self.binary_weight((out, c, k, k))
        if self.c.bool(0.8):
            y = self.conv_layer(q, out, k, s, p, weight)
            geometry = f"k{k} s{s} p{p}"
        else:
            y, geometry = self.raw_conv(q, out, weight, k, s)
        if y is None:
            return None
        return self.emit(y, f"binary conv [{qdesc}] [{wdesc}] O={out} {geometry} -> {list(y.shape)}")

    def raw_conv(self, q: Tensor, out: int, weight: np.ndarray, k: int, s: int) -> tuple[Tensor | None, str]:
        """A Conv node the writer does not make: auto_pad (SAME_* with an odd kernel and stride 1 is
        symmetric: bit-serial), or unequal strides / asymmetric pads / a non-square kernel (fp32)."""
        n, c, h, w = q.shape
        kind = self.c.choice(["auto_pad", "irregular"])
        if kind == "auto_pad":
            mode = self.c.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
            if mode == "VALID" and (h < k or w < k):
                return None, ""
            attrs = dict(auto_pad=mode, strides=[s, s])
            size = (lambda d: -(-d // s)) if mode != "VALID" else (lambda d: (d - k) // s + 1)
            oh, ow = size(h), size(w)
            desc = f"k{k} s{s} auto_pad={mode}"
        else:
            kh, kw = self.c.int(1, min(h, 4)), self.c.int(1, min(w, 4))
            weight = weight[:, :, :kh, :kw] if kh <= k and kw <= k else self.binary_weight((out, c, kh, kw))[0]
            sh, sw = self.c.int(1, 3), self.c.int(1, 3)
            pads = [self.c.int(0, min(2, kh - 1)), self.c.int(0, min(2, kw - 1)),
                    self.c.int(0, min(2, kh - 1)), self.c.int(0, min(2, kw - 1))]
            attrs = dict(strides=[sh, sw], pads=pads)
            oh, ow = (h + pads[0] + pads[2] - kh) // sh + 1, (w + pads[1] + pads[3] - kw) // sw + 1
            desc = f"k{kh}x{kw} s{sh}x{sw} pads{pads}"
        weight = np.ascontiguousarray(weight)
        b = self.bias(out)
        eb = self.linear_bound(q, weight.reshape(out, -1), b)
        if eb is None:
            return None, ""
        args = [q.name, self.g.constant(weight, "conv_w")] + ([self.g.constant(b, "conv_b")] if b is not None else [])
        name = self.g.node("Conv", args, "conv", kernel_shape=list(weight.shape[2:]), **attrs)
        return self.derived(name, (n, out, oh, ow), [q], *eb), desc

    def step_residual(self, x: Tensor) -> Tensor | None:
        """x + conv(q(x)) (same shape), or ResNet's downsampling pair conv3x3_s2(q) + conv1x1_s2(q)."""
        q, qdesc = self.quantize(x)
        n, c, h, w = x.shape
        if self.c.bool(0.35) and h >= 2 and w >= 2:
            out = self.out_channels(9)
            wa, da = self.binary_weight((out, c, 3, 3))
            wb, db = self.binary_weight((out, c, 1, 1))
            a = self.conv_layer(q, out, 3, 2, 1, wa, relu=False)
            b = self.conv_layer(q, out, 1, 2, 0, wb, relu=False)
            y = self.add(a, b) if a is not None and b is not None else None
            desc = f"downsample pair on one quantizer [{qdesc}] [{da}] [{db}] O={out}"
        else:
            p = self.c.int(0, 2)
            weight, wdesc = self.binary_weight((c, c, 2 * p + 1, 2 * p + 1))
            a = self.conv_layer(q, c, 2 * p + 1, 1, p, weight, relu=self.c.bool(0.3))
            y = self.add(a, x) if a is not None else None
            desc = f"residual add [{qdesc}] [{wdesc}] k{2 * p + 1}"
        if y is None:
            return None
        if self.c.bool(0.5):
            y, desc = self.relu(y), desc + " relu"
        return self.emit(y, desc)

    def step_concat(self, x: Tensor) -> Tensor | None:
        """DenseNet's concat(x, conv(q(x))) or concat(conv(q), conv1x1(q')) (same spatial size)."""
        q, qdesc = self.quantize(x)
        n, c, h, w = x.shape
        p = self.c.int(0, 2)
        out = self.c.int(1, 7)
        weight, wdesc = self.binary_weight((out, c, 2 * p + 1, 2 * p + 1))
        a = self.conv_layer(q, out, 2 * p + 1, 1, p, weight)
        if a is None:
            return None
        if self.c.bool():
            parts, desc = [x, a], f"densenet concat [{qdesc}] [{wdesc}] k{2 * p + 1}"
        else:
            q2, qdesc2 = self.quantize(x)
            out2 = self.c.int(1, 7)
            weight2, wdesc2 = self.binary_weight((out2, c, 1, 1))
            b = self.conv_layer(q2, out2, 1, 1, 0, weight2)
            if b is None:
                return None
            parts, desc = [a, b], f"concat of two branches [{qdesc}] [{wdesc}] k{2 * p + 1} | [{qdesc2}] [{wdesc2}]"
        if self.c.bool():
            parts = parts[::-1]
        shape = (n, sum(t.shape[1] for t in parts), h, w)
        if shape[1] > MAX_CHANNELS:
            return None
        return self.emit(self.derived(self.g.concat([t.name for t in parts]), shape, parts), desc)

    def step_fp32(self, x: Tensor) -> Tensor | None:
        """A layer patvm must leave on the fp32 path (and compute exactly like onnxruntime)."""
        n, c, h, w = x.shape
        kind = self.c.choice(["many-values", "grouped", "depthwise", "dilated", "unquantized", "quantizer-pool",
                              "matmul-4d"])
        q, qdesc = (x, "") if kind == "unquantized" else self.quantize(x)
        if kind == "matmul-4d":   # MatMul on the last axis of a 4-D quantizer output: not a dense layer
            out = self.c.int(1, 6)
            weight, _ = self.binary_weight((out, w))
            eb = self.linear_bound(Tensor(q.name, q.shape, q.exp, q.bound), weight, None)   # fp32: no kernel bound
            if eb is None:
                return None
            name = self.g.matmul(q.name, np.ascontiguousarray(weight.T))
            return self.emit(self.derived(name, (n, c, h, out), [q], *eb), f"matmul on 4-D [{qdesc}]")
        if kind == "many-values":
            k, s, p = self._conv_geometry(h, w)
            out = max(self.c.int(1, 6), -(-(MAX_WEIGHT_VALUES + 1) // (c * k * k)))
            y = self.conv_layer(q, out, k, s, p, self.many_values_weight((out, c, k, k)))
        elif kind in ("grouped", "depthwise"):
            if kind == "depthwise":
                group, out = c, c * self.c.int(1, 2)
            else:
                divisors = [d for d in range(2, c + 1) if c % d == 0]
                if not divisors:
                    return None
                group = self.c.choice(divisors)
                out = group * self.c.int(1, 2)
            k, s, p = self._conv_geometry(h, w)
            weight, _ = self.binary_weight((out, c // group, k, k))
            y = self.conv_layer(q, out, k, s, p, weight, group=group)
            kind += f" g{group}"
        elif kind == "dilated":
            k, p = self.c.int(2, 3), self.c.int(0, 2)
            if min(h, w) + 2 * p < 2 * (k - 1) + 1:
                return None
            out = self.c.int(1, 6)
            weight, _ = self.binary_weight((out, c, k, k))
            y = self.conv_layer(q, out, k, 1, p, weight, dilation=2)
        elif kind == "unquantized":
            k, s, p = self._conv_geometry(h, w)
            out = self.c.int(1, 6)
            weight, _ = self.binary_weight((out, c, k, k))
            y = self.conv_layer(x, out, k, s, p, weight)
        else:  # a quantizer feeding a pool, not a conv
            if h * w & (h * w - 1) == 0:        # a power of two: the mean is exact
                if self.dyadic and not representable(h * w * q.bound, q.exp):
                    return None
                y = self.derived(self.g.global_avgpool(q.name), (n, c, 1, 1), [q], q.exp + int(math.log2(h * w)))
            elif h >= 2 and w >= 2:
                y = self.derived(self.g.maxpool(q.name, 2, 2), (n, c, h // 2, w // 2), [q])
            else:
                y = q
            return self.emit(y, f"quantizer -> pool [{qdesc}] -> {list(y.shape)}")
        if y is None:
            return None
        return self.emit(y, f"fp32 conv ({kind}) [{qdesc}] -> {list(y.shape)}")

    def step_simple(self, x: Tensor) -> Tensor | None:
        n, c, h, w = x.shape
        kinds = ["avg2", "relu"] + ([] if x.special else ["max2", "max3"]) + ([] if self.dyadic else ["bn", "conv"])
        kind = self.c.choice(kinds)
        if kind == "relu":
            return self.emit(self.relu(x), "relu")
        if kind == "bn":
            scale = (np.abs(self.rng.standard_normal(c)) + 0.5).astype(np.float32)
            y = self.g.batchnorm(x.name, scale, self.rng.standard_normal(c), self.rng.standard_normal(c) * 0.1,
                                 np.abs(self.rng.standard_normal(c)) + 0.5)
            return self.emit(self.derived(y, x.shape, [x]), "batchnorm")
        if kind == "conv":         # float mode: an fp32 conv with plain float weights
            k, s, p = self._conv_geometry(h, w)
            out = self.c.int(1, 6)
            y = self.conv_layer(x, out, k, s, p, self.rng.standard_normal((out, c, k, k)).astype(np.float32))
            return self.emit(y, f"fp32 conv (float weights) -> {list(y.shape)}")
        if kind == "max3":
            return self.emit(self.derived(self.g.maxpool(x.name, 3, 1, 1), x.shape, [x]), "maxpool k3 s1 p1")
        if h < 2 or w < 2:
            return None
        shape = (n, c, h // 2, w // 2)
        if kind == "max2":
            return self.emit(self.derived(self.g.maxpool(x.name, 2, 2), shape, [x]), "maxpool k2 s2")
        if self.dyadic and not representable(4 * x.bound, x.exp + 2):
            return None
        return self.emit(self.derived(self.g.avgpool(x.name, 2, 2), shape, [x], x.exp + 2), "avgpool k2 s2")

    def step_dense(self, x: Tensor) -> Tensor | None:
        """[Flatten ->] quantizer -> Gemm / MatMul, or quantizer -> Flatten -> Gemm (stays fp32)."""
        desc = ""
        if len(x.shape) == 4:
            feats = int(np.prod(x.shape[1:]))
            if feats > MAX_FEATURES:
                return None
            if self.c.bool(0.2):   # quantize before flattening: not a pattern patvm matches
                q, qdesc = self.quantize(x)
                flat = self.derived(self.g.flatten(q.name), (x.shape[0], feats), [q])
                out = self.c.int(1, 12)
                weight, wdesc = self.binary_weight((out, feats))
                b = self.bias(out)
                eb = self.linear_bound(flat, weight, b)
                if eb is None:
                    return None
                y = self.derived(self.g.gemm(flat.name, weight, b), (x.shape[0], out), [flat], *eb)
                return self.emit(y, f"quantizer -> flatten -> gemm [{qdesc}] [{wdesc}] O={out}")
            x = self.derived(self.g.flatten(x.name), (x.shape[0], feats), [x])
            desc = "flatten -> "
        q, qdesc = self.quantize(x)
        out = self.out_channels(12)
        weight, wdesc = self.binary_weight((out, x.shape[1]))
        use_matmul = self.c.bool(0.35)
        b = None if use_matmul else self.bias(out)
        eb = self.linear_bound(q, weight, b)
        if eb is None:
            return None
        if use_matmul:
            name, op = self.g.matmul(q.name, np.ascontiguousarray(weight.T)), "matmul"
        elif self.c.bool(0.25):   # Gemm's alpha / beta (dyadic): the scale is applied after the matmul
            alpha, beta = self.c.choice([0.5, 2.0, -1.0, 0.25]), self.c.choice([1.0, 0.5, -2.0])
            scale = max(abs(alpha), abs(beta))
            if self.dyadic and not representable(eb[1] * scale, eb[0] + 2):
                return None
            eb = (eb[0] + 2, eb[1] * scale)
            args = [q.name, self.g.constant(weight, "fc_w")] + ([self.g.constant(b, "fc_b")] if b is not None else [])
            name = self.g.node("Gemm", args, "gemm", transB=1, alpha=alpha, beta=beta)
            op = f"gemm alpha={alpha} beta={beta}"
        else:
            name, op = self.g.gemm(q.name, weight, b), "gemm"
        y = self.derived(name, (x.shape[0], out), [q], *eb)
        if self.c.bool(0.4):
            y, op = self.relu(y), op + " relu"
        return self.emit(y, f"{desc}binary {op} [{qdesc}] [{wdesc}] O={out}")

    def step_residual_dense(self, x: Tensor) -> Tensor | None:
        q, qdesc = self.quantize(x)
        f = x.shape[1]
        weight, wdesc = self.binary_weight((f, f))
        eb = self.linear_bound(q, weight, None)
        if eb is None:
            return None
        y = self.add(self.derived(self.g.gemm(q.name, weight), x.shape, [q], *eb), x)
        return None if y is None else self.emit(y, f"dense residual add [{qdesc}] [{wdesc}]")

    # ---- the graph
    def build(self) -> FuzzCase:
        c = self.c
        batch = c.int(1, self.max_batch)
        channels = c.choice([1, 2, 3, 4, 5, 7, 9, 13, 64, 65], [3, 3, 3, 3, 3, 3, 3, 2, 1, 1])
        # a wide graph (1 in 6 at the default sizes): up to 28 x 28 and 16-32 output channels, the CPU
        # schedules' other tile sizes (ow tiles 7 / 8 / 16, o tiles 8 / 16)
        self.wide = self.max_size >= 10 and c.bool(1 / 6)
        size = 28 if self.wide else self.max_size
        h = c.int(1, size)
        w = h if c.bool() else c.int(1, size)
        shape = (batch, channels, h, w)
        name = self.g.input("x", list(shape))
        data = grid(self.rng, shape, 8, 24) if self.dyadic else self.rng.standard_normal(shape).astype(np.float32)
        special = self.dyadic and c.bool(0.15)
        if special:   # a few NaN / +-inf elements: fp32 results are order-independent (denormals are not)
            count = self.c.int(1, max(1, data.size // 8))
            where = self.rng.choice(data.size, size=count, replace=False)
            data.flat[where] = self.rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32),
                                               size=count)
        self.inputs[name] = data
        finite = data[np.isfinite(data)]
        self.emit(Tensor(name, shape, dyadic_exp(finite), float(np.abs(finite).max()) if finite.size else 0.0,
                         special=special), f"input {list(shape)}" + (" with NaN/inf" if special else ""))
        for _ in range(c.int(1, self.max_steps)):
            for _attempt in range(4):
                if self._one_step() is not None:
                    break
        # every tensor nothing reads is an output (the newest three), so few branches are dead code
        leaves = [t for t in self.pool if t.name not in self.consumed] or [self.pool[-1]]
        outputs = leaves[-3:]
        for i, t in enumerate(outputs):
            self.g.output(t.name, list(t.shape), name=f"output_{i}")
        if self.wide:
            self.steps[0] += " (wide)"
        return FuzzCase(None, None, self.mode, self.g.model(), self.inputs, self.steps)

    def _one_step(self) -> Tensor | None:
        c = self.c
        x = self.pool[-1] if c.bool(0.75) else c.choice(self.pool)
        # float mode stays shallow: no quantizer behind two quantizers (flips would compound)
        can_quantize = self.dyadic or x.depth < 2
        if len(x.shape) == 2:
            kind = c.choice(["dense", "dense-residual", "relu"], [4, 2, 1] if can_quantize else [0, 0, 1])
            if kind == "relu":
                return self.emit(self.relu(x), "relu")
            return self.step_dense(x) if kind == "dense" else self.step_residual_dense(x)
        kind = c.choice(["conv", "residual", "concat", "fp32", "simple", "dense"],
                        [6, 3, 2, 3, 2, 2] if can_quantize else [0, 0, 0, 0, 1, 0])
        step = {"conv": self.step_binary_conv, "residual": self.step_residual, "concat": self.step_concat,
                "fp32": self.step_fp32, "simple": self.step_simple, "dense": self.step_dense}[kind]
        return step(x)


# ---------------------------------------------------------------------------------------------- public
def generate(seed: int, index: int, mode: str | None = None, strategy: str | None = None, **kwargs) -> FuzzCase:
    """Graph `index` of campaign `seed`. mode None: 4 in 5 dyadic, 1 in 5 float; strategy None: 8 in 10
    "bit-serial" (every exact match lowered: the path under test), 1 in 10 "auto", 1 in 10 "fp32"."""
    rng = np.random.default_rng([seed, index])
    draw_mode, draw_strategy = rng.random(), rng.random()
    if mode is None:
        mode = "float" if draw_mode < 0.2 else "dyadic"
    if strategy is None:
        strategy = "auto" if draw_strategy < 0.1 else "fp32" if draw_strategy < 0.2 else "bit-serial"
    case = GraphGenerator(RngChooser(rng), mode, **kwargs).build()
    case.seed, case.index, case.strategy = seed, index, strategy
    return case


def generate_with_hypothesis(data, mode: str = "dyadic", **kwargs) -> FuzzCase:
    """For `@given(st.data())` tests: structural choices are hypothesis draws (shrinkable)."""
    return GraphGenerator(HypothesisChooser(data), mode, **kwargs).build()


def onnxruntime_outputs(model: onnx.ModelProto, inputs: dict) -> list[np.ndarray]:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"


def compare(got: list[np.ndarray], want: list[np.ndarray], mode: str) -> str | None:
    """None when `got` passes against the reference `want`, else what differs."""
    if len(got) != len(want):
        return f"{len(got)} outputs, onnxruntime has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"output {i}: {g.dtype}{list(g.shape)} vs onnxruntime {w.dtype}{list(w.shape)}"
        if mode == "dyadic":
            if not np.array_equal(g, w, equal_nan=True):
                off = ~((g == w) | (np.isnan(g) & np.isnan(w)))
                with np.errstate(invalid="ignore"):
                    worst = float(np.nanmax(np.abs(g.astype(np.float64) - w)))
                first = tuple(int(i) for i in np.argwhere(off)[0])
                return (f"output {i}: {int(off.sum())} of {off.size} elements differ (max |diff| {worst:.6g}); "
                        f"first at {list(first)}: {g[first]!r} vs onnxruntime {w[first]!r}")
            continue
        problem = float_tolerance_problem(g, w)
        if problem:
            return f"output {i}: {problem}"
    return None


def float_tolerance_problem(got: np.ndarray, want: np.ndarray) -> str | None:
    """Top-1 agreement and at most 0.1% of elements off by more than 1e-3 of the range."""
    g, w = got.astype(np.float64), want.astype(np.float64)
    if not np.array_equal(np.isnan(g), np.isnan(w)):
        return "NaN positions differ"
    finite = np.isfinite(w)
    if not np.array_equal(g[~finite], w[~finite], equal_nan=True):
        return "infinities differ"
    span = float(w[finite].max() - w[finite].min()) if finite.any() else 0.0
    if span == 0.0:   # a constant (or one-element) output: its magnitude is the range
        span = float(np.abs(w[finite]).max()) if finite.any() else 0.0
    tol = 1e-3 * span
    diff = np.where(finite, np.abs(g - w), 0.0)
    fraction = float(np.mean(diff > tol))
    if fraction > 1e-3:
        return (f"{100 * fraction:.3f}% of elements off by > 1e-3 of range "
                f"(max |diff| {diff.max():.3g}, range {span:.3g})")
    batch = w.shape[0] if w.ndim > 1 else 1
    g2, w2 = np.nan_to_num(g.reshape(batch, -1)), np.nan_to_num(w.reshape(batch, -1))
    winners = np.argmax(w2, axis=1)
    # the reference winner must also win (up to the tolerance: exact ties are not disagreements)
    agree = g2[np.arange(batch), winners] >= g2.max(axis=1) - tol
    if not agree.all():
        return f"top-1 disagrees on {int((~agree).sum())} of {batch} images"
    return None


def run_case(case: FuzzCase, target: str = "host") -> Outcome:
    import patvm
    start = time.perf_counter()
    try:
        want = onnxruntime_outputs(case.model, case.inputs)
    except Exception as exc:  # noqa: BLE001 - a generator bug, reported as such
        return Outcome(case, "reference-error", _first_line(exc), seconds=time.perf_counter() - start)
    try:
        compiled = patvm.compile(case.model, target=target, strategy=case.strategy)
    except Exception as exc:  # noqa: BLE001 - any exception compiling a valid model is a finding
        return Outcome(case, "compile-error", _first_line(exc), seconds=time.perf_counter() - start)
    try:
        got = compiled.run([case.inputs[i["name"]] for i in compiled.inputs])
    except Exception as exc:  # noqa: BLE001
        return Outcome(case, "run-error", _first_line(exc), compiled.layers, time.perf_counter() - start)
    problem = compare(got, want, case.mode)
    status = "pass" if problem is None else "mismatch"
    if problem is not None and case.mode == "float":
        flip = rounding_flip(case, got, target)
        status, problem = ("flip", flip) if flip else (status, problem)
    return Outcome(case, status, problem or "", compiled.layers, time.perf_counter() - start)


FLIP_INPUT_TOLERANCE = 1e-4   # of the quantizer input's range: fp32 summation-order rounding, nothing more


def _probe(model: onnx.ModelProto, outputs: list[str], shapes: dict) -> onnx.ModelProto:
    """`model` with `outputs` (intermediate tensors, shapes from `shapes` where known) as its outputs."""
    from onnx import TensorProto, helper
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes.get(n)) for n in outputs)
    return probe


def _fed_at(model: onnx.ModelProto, name: str, shape: list[int]) -> onnx.ModelProto:
    """`model` with tensor `name` fed as a graph input instead of computed by its node."""
    from onnx import TensorProto, helper
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    kept = [n for n in cut.graph.node if name not in n.output]
    del cut.graph.node[:]
    cut.graph.node.extend(kept)
    cut.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    return cut


def rounding_flip(case: FuzzCase, got: list[np.ndarray], target: str = "host") -> str | None:
    """Float mode: is the difference `got` vs onnxruntime one threshold flip? It is when the first quantizer
    whose output differs got inputs that agree up to fp32 rounding (FLIP_INPUT_TOLERANCE), patvm's levels
    are exactly the reference quantizer applied to patvm's own input, and onnxruntime fed with patvm's
    levels there gives patvm's outputs (within the float bar: the layers after the flip are checked too).
    Returns a description of the flip, else None."""
    import patvm
    from patvm.compiler.importer import quantizer_staircase
    from patvm.onnx_format import paquantize
    model = case.model
    quantizers = [n for n in model.graph.node if paquantize.is_paquantize(n)]
    if not quantizers:
        return None
    names = [name for n in quantizers for name in (n.input[0], n.output[0])]
    values = dict(zip(names, onnxruntime_outputs(_probe(model, names, {}), case.inputs)))
    initializers = {t.name: t for t in model.graph.initializer}
    for node in quantizers:
        x_name, q_name = node.input[0], node.output[0]
        probe = _probe(model, [x_name, q_name], {n: list(values[n].shape) for n in (x_name, q_name)})
        compiled = patvm.compile(probe, target=target, strategy=case.strategy)
        got_x, got_q = compiled.run([case.inputs[i["name"]] for i in compiled.inputs])
        want_x, want_q = values[x_name], values[q_name]
        off = ~((got_q == want_q) | (np.isnan(got_q) & np.isnan(want_q)))
        if not off.any():
            continue
        finite = np.isfinite(want_x)
        span = float(np.ptp(want_x[finite])) if finite.any() else 0.0
        with np.errstate(invalid="ignore"):
            input_diff = np.abs(got_x.astype(np.float64) - want_x)
        reference = quantizer_staircase(node, initializers).quantize(got_x)
        explained = (input_diff <= FLIP_INPUT_TOLERANCE * max(span, 1e-30)) & (reference == got_q)
        if not explained[off].all():
            return None
        feeds = dict(case.inputs, **{q_name: got_q})
        downstream = onnxruntime_outputs(_fed_at(model, q_name, list(got_q.shape)), feeds)
        if compare(got, downstream, "float") is not None:
            return None
        return (f"threshold flip at PAQuantize '{node.name}': {int(off.sum())} of {off.size} levels, inputs within "
                f"{float(input_diff[off].max()):.3g} of onnxruntime's (range {span:.3g})")
    return None


def first_divergence(case: FuzzCase, target: str = "host") -> str | None:
    """The first node (in graph order) whose output already differs: the place to look for the bug."""
    model = case.model
    names = [node.output[0] for node in model.graph.node if node.op_type != "Identity"]
    shapes = {n: list(v.shape) for n, v in zip(names, onnxruntime_outputs(_probe(model, names, {}), case.inputs))}
    for node in model.graph.node:
        name = node.output[0]
        if name not in shapes:
            continue
        probe = _probe(model, [name], shapes)
        sub = FuzzCase(case.seed, case.index, case.mode, probe, case.inputs, case.steps, case.strategy)
        outcome = run_case(sub, target)
        if not outcome.ok:
            return f"{node.op_type} '{name}': {outcome.status}: {outcome.detail}"
    return None


def save_case(case: FuzzCase, folder: str, outcome: Outcome | None = None) -> str:
    from patvm.onnx_format import save_model
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"fuzz-seed{case.seed}-graph{case.index}")
    save_model(case.model, stem + ".onnx")
    np.savez(stem + ".npz", **case.inputs)
    with open(stem + ".txt", "w") as f:
        f.write(case.label + "\n" + "\n".join(case.steps) + "\n")
        if outcome is not None:
            f.write(f"{outcome.status}: {outcome.detail}\n")
    return stem


def campaign(seed: int, graphs: int, start: int = 0, mode: str | None = None, strategy: str | None = None,
             target: str = "host",
             time_limit: float | None = None, save_failures: str | None = None, localize: bool = False,
             verbose: bool = False, out=None, **sizes) -> dict:
    """Graphs start .. start+graphs-1 of `seed`; prints one line per failure (per graph with verbose) and a
    summary; returns the summary. `sizes`: GraphGenerator's max_steps / max_size / max_batch."""
    out = out or sys.stdout
    began = time.perf_counter()
    tried, failures, modes, bit_serial, fp32_layers, flips = 0, [], Counter(), 0, 0, 0
    for index in range(start, start + graphs):
        if time_limit is not None and time.perf_counter() - began > time_limit:
            break
        try:
            case = generate(seed, index, mode, strategy, **sizes)
        except Exception as exc:  # noqa: BLE001 - a generator bug: report it, keep going
            print(f"graph {index}: generator error {_first_line(exc)}", file=out)
            failures.append(("generator-error", index, _first_line(exc)))
            continue
        outcome = run_case(case, target)
        tried += 1
        modes[case.mode] += 1
        flips += outcome.status == "flip"
        bit_serial += outcome.bit_serial
        fp32_layers += len(outcome.layers) - outcome.bit_serial
        if verbose or not outcome.ok:
            print(f"graph {index} ({case.mode}, {case.strategy}, {len(case.steps) - 1} steps, {outcome.bit_serial}/"
                  f"{len(outcome.layers)} bit-serial, {outcome.seconds:.1f} s): {outcome.status} {outcome.detail}",
                  file=out, flush=True)
        if not outcome.ok:
            print("    " + "\n    ".join(case.steps), file=out)
            if localize:
                print(f"    first divergence: {first_divergence(case, target)}", file=out)
            if save_failures:
                print(f"    saved {save_case(case, save_failures, outcome)}.onnx", file=out)
            failures.append((outcome.signature(), index, outcome.detail))
            out.flush()
    summary = {"seed": seed, "start": start, "graphs": tried, "modes": dict(modes), "failures": len(failures),
               "signatures": dict(Counter(sig for sig, _, _ in failures)),
               "failed_graphs": [i for _, i, _ in failures], "bit_serial_layers": bit_serial,
               "fp32_layers": fp32_layers, "rounding_flips": flips, "seconds": round(time.perf_counter() - began, 1)}
    print(f"fuzz: {tried} graphs ({', '.join(f'{v} {k}' for k, v in sorted(modes.items()))}), "
          f"{bit_serial} bit-serial and {fp32_layers} fp32 conv/dense layers, {len(failures)} failures "
          f"({flips} float graphs with a tolerated rounding flip) in {summary['seconds']} s", file=out)
    for sig, count in summary["signatures"].items():
        print(f"  {count} x {sig}", file=out)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m patvm.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="index of the first graph (rebuild one graph)")
    p.add_argument("--mode", choices=MODES, default=None, help="default: 4 in 5 dyadic, 1 in 5 float")
    p.add_argument("--strategy", choices=("bit-serial", "auto", "fp32"), default=None,
                   help="patvm.compile strategy; default: 8 in 10 bit-serial, 1 auto, 1 fp32")
    p.add_argument("--target", default="host")
    p.add_argument("--time-limit", type=float, default=None, help="stop starting graphs after this many seconds")
    p.add_argument("--save-failures", default=None, metavar="DIR", help="write failing graphs (.onnx/.npz/.txt)")
    p.add_argument("--localize", action="store_true", help="find the first diverging node of a failure")
    p.add_argument("--max-steps", type=int, default=None, help="steps per graph (default 6 dyadic, 4 float)")
    p.add_argument("--max-size", type=int, default=10, help="largest input height / width")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("-v", "--verbose", action="store_true", help="one line per graph")
    args = p.parse_args(argv)
    summary = campaign(args.seed, args.graphs, args.start, args.mode, args.strategy, args.target, args.time_limit,
                       args.save_failures, args.localize, args.verbose, max_steps=args.max_steps,
                       max_size=args.max_size, max_batch=args.max_batch)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
