"""`NetBuilder`: writes a zoo network as PA-ONNX and calibrates it in the same pass.

Every method appends ONNX node(s) through `GraphWriter` and pushes the calibration batch through the
same operation in numpy (`patvm.zoo.calibrate`), so each layer is set up from the activations that reach
it in the finished network: BatchNorm running statistics from its input, quantizer thresholds/levels from
the BN'd activation it quantizes. One builder serves PA, ABC-Net and the full-precision twins: with no
scheme, `quantize` is the identity and binary convs keep their real weights, so a twin built with the
same seed has the very weights the binary model approximates.

exact=True (`patvm.zoo.exact`): the same networks with every parameter that meets fp32 arithmetic before
the pool rounded to a short dyadic value where it is set, and (binary models) each activation carrying a
`Grid` that proves every sum exact in any order; the calibration batch is dyadic images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from patvm.errors import require
from patvm.onnx_format import GraphWriter
from patvm.progress import Bar
from patvm.zoo import calibrate
from patvm.zoo import exact as ex
from patvm.zoo.schemes import Scheme

NUM_CLASSES = 1000


@dataclass(frozen=True)
class Act:
    """An ONNX value and what the calibration batch looks like there ([n, C, H, W] or [n, F])."""

    name: str
    data: np.ndarray
    grid: ex.Grid | None = None   # exact mode: what every input can make of it (None otherwise)

    @property
    def channels(self) -> int:
        return int(self.data.shape[1])


class NetBuilder:
    def __init__(self, name: str, scheme: Scheme | None, seed: int, batch: int, image_size: int,
                 exact: bool = False, progress: Bar | None = None):
        self.writer = GraphWriter(name)
        self.progress = progress         # counts the conv / FC layers calibrated
        self.scheme = scheme
        self.exact = exact
        # A twin has no quantizer to reset the grid: its sums compound through the depth, so no bound is
        # kept for it (exact mode rounds its parameters all the same). Without an input grid, none is kept.
        self.tracked = exact and scheme is not None
        self.budget = ex.BitBudget()
        self.rng = np.random.default_rng(seed)   # weights and BN affine parameters, in build order
        self.seed, self.batch, self.image_size = seed, batch, image_size
        self._quantized: set[str] = set()

    # ---- graph ends
    def input(self) -> Act:
        S = self.image_size
        name = self.writer.input("input", [self.batch, 3, S, S])
        return Act(name, calibrate.calibration_images(self.seed, S, self.exact),
                   self.budget.input(3) if self.tracked else None)

    def output(self, logits: Act) -> onnx.ModelProto:
        self.writer.output(logits.name, [self.batch, NUM_CLASSES])
        model = self.writer.model()
        if self.tracked:
            onnx.helper.set_model_props(model, {ex.EXACT_BITS_KEY: f"{self.budget.worst:.2f}"})
        return model

    # ---- binary-layer pieces
    def quantize(self, x: Act) -> Act:
        """PAQuantize with a staircase fitted to x (PA eq. 10 / ABC eq. 8-9); identity for a twin."""
        if self.scheme is None:
            return x
        stair = self.scheme.staircase(x.data)
        y = Act(self.writer.pa_quantize(x.name, stair), stair.quantize(x.data),
                self.budget.quantize(x.grid, stair.levels))
        self._quantized.add(y.name)
        return y

    def conv(self, x: Act, out_channels: int, kernel: int, stride: int = 1, group: int = 1,
             binary: bool = False) -> Act:
        """He-initialised (kaiming normal, fan-out, as torchvision) conv with 'same' padding.
        binary: W -> W_bar (PA eq. 6 / ABC eq. 5), and x must be a quantizer output."""
        fan_out = out_channels * kernel * kernel // group
        w = self.rng.standard_normal((out_channels, x.channels // group, kernel, kernel), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_out))
        if binary and self.scheme is not None:
            require(x.name in self._quantized, f"binary conv on {x.name}, which is not a PAQuantize output")
            w = self.scheme.approximate(w)
        elif self.exact and not binary:   # a twin keeps the real weights its binary versions approximate
            w = ex.to_dyadic(w, ex.FP_WEIGHT_BITS)
        pad = kernel // 2
        name = self.writer.conv(x.name, w, stride=stride, pad=pad, group=group)
        y = Act(name, calibrate.conv2d(x.data, w, stride, pad, group), self.budget.conv(x.grid, w, group, binary, name))
        self._layer_done()
        return y

    def batchnorm(self, x: Act) -> Act:
        """Running statistics of x itself, so the output is ~N(beta, gamma^2); gamma ~ 1, beta ~ 0."""
        C = x.channels
        gamma = np.clip(1.0 + 0.1 * self.rng.standard_normal(C), 0.5, 1.5).astype(np.float32)
        beta = (0.1 * self.rng.standard_normal(C)).astype(np.float32)
        mean, var = calibrate.channel_stats(x.data)
        eps = calibrate.BN_EPS
        if self.exact:
            (gamma, beta, mean, var), eps = ex.batchnorm_params(gamma, beta, mean, var), 0.0
        name = self.writer.batchnorm(x.name, gamma, beta, mean, var, eps)
        return Act(name, calibrate.batchnorm(x.data, gamma, beta, mean, var, eps),
                   self.budget.batchnorm(x.grid, gamma, beta, mean, var, name))

    def conv_bn(self, x: Act, out_channels: int, kernel: int, stride: int = 1, group: int = 1,
                binary: bool = False, relu: bool = False) -> Act:
        y = self.batchnorm(self.conv(x, out_channels, kernel, stride, group, binary))
        return self.relu(y) if relu else y

    def binary_conv(self, x: Act, out_channels: int, kernel: int, stride: int = 1) -> Act:
        """PAQuantize -> Conv(W_bar): the binary layer of every zoo network."""
        return self.conv(self.quantize(x), out_channels, kernel, stride, binary=True)

    def binary_conv_bn(self, x: Act, out_channels: int, kernel: int, stride: int = 1, relu: bool = False) -> Act:
        """PAQuantize -> Conv(W_bar) -> BN [-> ReLU]."""
        return self.conv_bn(self.quantize(x), out_channels, kernel, stride, binary=True, relu=relu)

    # ---- plain layers
    def relu(self, x: Act) -> Act:
        return Act(self.writer.relu(x.name), np.maximum(x.data, 0), self.budget.relu(x.grid))

    def add(self, a: Act, b: Act) -> Act:
        name = self.writer.add(a.name, b.name)
        return Act(name, a.data + b.data, self.budget.add(a.grid, b.grid, name))

    def concat(self, xs: list[Act]) -> Act:
        return Act(self.writer.concat([x.name for x in xs]), np.concatenate([x.data for x in xs], axis=1),
                   self.budget.concat([x.grid for x in xs]))

    def maxpool(self, x: Act, kernel: int, stride: int, pad: int) -> Act:
        return Act(self.writer.maxpool(x.name, kernel, stride, pad), calibrate.maxpool(x.data, kernel, stride, pad),
                   x.grid)

    def avgpool(self, x: Act, kernel: int, stride: int) -> Act:
        name = self.writer.avgpool(x.name, kernel, stride)
        return Act(name, calibrate.avgpool(x.data, kernel, stride),
                   self.budget.avgpool(x.grid, kernel, name))

    def classifier(self, x: Act) -> Act:
        """GlobalAveragePool -> Flatten -> full-precision FC (Gemm) to the 1000 logits."""
        g = self.writer.flatten(self.writer.global_avgpool(x.name))
        feats = calibrate.global_avgpool(x.data).reshape(x.data.shape[0], -1)
        w = self.rng.standard_normal((NUM_CLASSES, feats.shape[1]), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / feats.shape[1]))
        b = (0.01 * self.rng.standard_normal(NUM_CLASSES)).astype(np.float32)
        y = Act(self.writer.gemm(g, w, b), feats @ w.T + b)
        self._layer_done()
        return y

    def _layer_done(self) -> None:
        if self.progress is not None:
            self.progress.advance()

    def stem(self, x: Act, out_channels: int, kernel: int, stride: int) -> Act:
        """The full-precision first conv -> BN -> ReLU."""
        return self.conv_bn(x, out_channels, kernel, stride, relu=True)
