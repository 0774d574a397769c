"""The graph generator of the differential fuzzer: random small PA-ONNX graphs.

    python -m patvm.testing.fuzz --graphs 500 --seed 0           # the long campaign (docs/reliability.md)
    python -m patvm.testing.fuzz --graphs 1 --seed 0 --start 17 --save-failures out/ --localize   # one graph again

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
`HypothesisChooser` (hypothesis `data.draw`, so hypothesis can shrink a failing graph)."""
from __future__ import annotations

import math

import numpy as np

from patvm.approx.planes import MAX_WEIGHT_VALUES
from patvm.testing.cases import (
    MAX_CHANNELS,
    MAX_FEATURES,
    FuzzCase,
    HypothesisChooser,
    RngChooser,
    Tensor,
    dyadic_exp,
    grid,
    representable,
)
from patvm.testing.graph_parts import GraphParts


class GraphGenerator(GraphParts):
    """Builds one random graph; `build()` returns a FuzzCase."""

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
