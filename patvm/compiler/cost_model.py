"""A binary layer's predicted time on each path: the machine's peaks times the efficiency patvm's own
kernels reach at that layer's shape.

    bit-serial  MACs * M*N / (popcount peak [bit-MAC/s] * e_bs(words)),  words = K*K*ceil(C/64) per output
    fp32        MACs / (FMA peak [MAC/s] * e_fp(R)),                     R = C*K*K per output

e(x) = e_max * x / (x + x_half): a kernel loses to its per-output work (the plane-pair combine, the epilogue,
the stores) when the reduction per output is short. The constants are fitted to benchmarks/layers.py on an
AMD EPYC Zen 3 (1 thread): bit-serial 3x3 layers at 61-79% of the popcount peak (9-72 words per output),
1x1 stride-2 layers at 20-52% (1-4 words); the blocked fp32 conv at ~53% of the FMA peak at R = 576 and
~30-45% at R = 64-256. Other CPUs are assumed to reach the same fractions of their own peaks, which is why
the peaks are measured per CPU (patvm.peaks) and `patvm tune --measure-strategies` replaces the
prediction by measurements where it matters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from patvm.compiler.workload import WorkloadKey
from patvm.peaks import Peaks

WORD_BITS = 64


@dataclass(frozen=True)
class Efficiency:
    """The fraction of the peak a kernel reaches with a reduction of x per output: e_max * x / (x + x_half)."""

    e_max: float
    x_half: float

    def __call__(self, x: float) -> float:
        return self.e_max * x / (x + self.x_half)


BIT_SERIAL = Efficiency(0.82, 2.5)      # x: 64-bit words per output and plane pair
FP32 = Efficiency(0.62, 90.0)           # x: MACs per output


@dataclass(frozen=True)
class Prediction:
    bit_serial_s: float
    fp32_s: float

    def choice(self, fp32_margin: float) -> str:
        """fp32 where it is predicted `fp32_margin` times faster, else bit-serial."""
        return "fp32" if self.fp32_s * fp32_margin < self.bit_serial_s else "bit-serial"

    def describe(self) -> str:
        return f"predicted bit-serial {self.bit_serial_s * 1e3:.3g} ms, fp32 {self.fp32_s * 1e3:.3g} ms"


def layer_macs(key: WorkloadKey) -> tuple[int, int, int]:
    """(MACs, words per output, MACs per output) of a conv or dense workload."""
    out_channels, in_channels = key.w_shape[0], key.w_shape[1]
    kernel_h, kernel_w = (key.w_shape[2], key.w_shape[3]) if len(key.w_shape) == 4 else (1, 1)
    if key.kind == "dense":
        outputs = key.x_shape[0] * out_channels
    else:
        n, _, h, w = key.x_shape
        oh = (h + 2 * key.pad - kernel_h) // key.stride + 1
        ow = (w + 2 * key.pad - kernel_w) // key.stride + 1
        outputs = n * out_channels * oh * ow
    per_output = in_channels * kernel_h * kernel_w
    words = kernel_h * kernel_w * math.ceil(in_channels / WORD_BITS)
    return outputs * per_output, words, per_output


def predict(key: WorkloadKey, plane_pairs: int, peaks: Peaks) -> Prediction:
    macs, words, per_output = layer_macs(key)
    bit_serial = macs * max(plane_pairs, 1) / (peaks.popcount * BIT_SERIAL(words))
    fp32 = macs / (peaks.fma * FP32(per_output))
    return Prediction(bit_serial, fp32)
