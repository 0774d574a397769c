"""The building blocks of a random graph: probing the partial graph, quantizer tables, weights, the
exactness bookkeeping of dyadic mode, and a conv layer. `patvm.testing.generator.GraphGenerator` adds
the steps that compose them into a graph."""
from __future__ import annotations

import math

import numpy as np

from patvm.approx import Staircase, abc_activation_staircase, approximate_weights_abc, approximate_weights_pa
from patvm.approx.planes import MAX_WEIGHT_VALUES, decompose_weights
from patvm.onnx_format import GraphWriter
from patvm.testing.cases import MODES, Tensor, dyadic_exp, grid, representable
from patvm.testing.oracle import onnxruntime_outputs


class GraphParts:
    """The state of one graph under construction and the pieces its steps are made of."""

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

