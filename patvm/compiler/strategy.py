"""Per-layer strategy: bit-serial, or the dequantized fp32 conv on the quantizer's exact output.

Both are exact computations of the same layer; which is faster depends on M x N, the layer's shape and the
machine. `auto` takes the path patvm.compiler.cost_model predicts faster from the target's peaks:

- `host`: this CPU's, measured once (about a second) and cached (patvm.peaks); where they cannot be
  measured (no C compiler), the figures of the preset of its family (x86-avx512 with VPOPCNTDQ, else
  x86-avx2; arm-a72);
- a preset: the figures in targets/<preset>.json ("peaks": measured on such a CPU by
  benchmarks/roofline.py, or estimated from the vendor's numbers, as the preset says);

and measured choices (`patvm tune --measure-strategies`, DB/strategies.json) replace the prediction.
CUDA presets keep a fixed rule, bit-serial up to `bitserial_max_plane_pairs` plane pairs: the GPU kernels
have not been timed yet, so there is nothing to fit a model to.
"""
from __future__ import annotations

from dataclasses import dataclass

from patvm.compiler.cost_model import predict
from patvm.compiler.workload import WorkloadKey
from patvm.peaks import Peaks

STRATEGIES = ("auto", "bit-serial", "fp32")
# fp32 only where predicted this much faster: the model is fitted to +-25% or so, and near the crossover
# the bit-serial kernel (weights packed at run time too) is the safer side
FP32_MARGIN = 1.25
HOST_FALLBACK_PRESET = {"x86": "x86-avx2", "arm": "arm-a72", "cpu": "x86-avx2"}


@dataclass(frozen=True)
class StrategyPolicy:
    mode: str = "auto"                  # "auto", "bit-serial" (always, where exact) or "fp32" (never)
    peaks: Peaks | None = None          # what `auto` predicts from (CPUs)
    max_plane_pairs: int | None = None  # or `auto`'s fixed rule (CUDA)
    measured: dict | None = None        # workload key -> {"strategy", "note"} (from `patvm tune`)

    def choose(self, workload: str, plane_pairs: int) -> tuple[str, str]:
        """(strategy, reason) for a layer with `plane_pairs` = weight planes x activation planes."""
        if self.mode != "auto":
            return self.mode, f"strategy forced to {self.mode}"
        if self.measured and workload in self.measured:
            choice = self.measured[workload]
            return choice["strategy"], f"measured: {choice.get('note', '')}".strip()
        if self.peaks is None:
            if plane_pairs <= self.max_plane_pairs:
                return "bit-serial", ""
            return "fp32", f"M*N={plane_pairs} > {self.max_plane_pairs} (this target's fixed rule)"
        prediction = predict(WorkloadKey.parse(workload), plane_pairs, self.peaks)
        if prediction.choice(FP32_MARGIN) == "bit-serial":
            return "bit-serial", prediction.describe()
        return "fp32", (f"M*N={plane_pairs}: {prediction.describe()} ({self.peaks.origin}; "
                        "`patvm tune --measure-strategies` measures)")


def preset_peaks(name: str, data: dict) -> Peaks:
    from patvm.errors import PatvmError
    figures = data.get("peaks")
    if not figures:
        raise PatvmError(f"target preset {name} has no \"peaks\" figures: patvm's strategy `auto` needs them")
    return Peaks(float(figures["popcount_bit_macs_per_s"]), float(figures["fma_macs_per_s"]),
                 f"{name} preset figures: {figures.get('source', 'no source given')}")


def target_peaks(spec) -> Peaks:
    """The peaks `auto` predicts from for a CPU target `spec` (see the module docstring)."""
    from patvm.targets import host_has_feature, list_presets
    if spec.extra.get("peaks"):
        return preset_peaks(spec.name, spec.extra)
    if spec.name == "host":
        from patvm.peaks import PeaksUnavailable, host_peaks
        try:
            return host_peaks()
        except PeaksUnavailable:
            pass
    fallback = HOST_FALLBACK_PRESET.get(spec.family, "x86-avx2")
    if spec.family == "x86" and spec.name == "host" and host_has_feature("avx512vpopcntdq"):
        fallback = "x86-avx512"
    return preset_peaks(fallback, list_presets()[fallback])


def default_policy(spec, mode: str = "auto", measured: dict | None = None) -> StrategyPolicy:
    from patvm.errors import PatvmError
    if mode not in STRATEGIES:
        raise PatvmError(f"unknown strategy {mode!r}; one of {', '.join(STRATEGIES)}")
    if mode != "auto":
        return StrategyPolicy(mode, measured=measured)
    if spec.family == "cuda":
        return StrategyPolicy(mode, max_plane_pairs=int(spec.extra.get("bitserial_max_plane_pairs", 64)),
                              measured=measured)
    return StrategyPolicy(mode, peaks=target_peaks(spec), measured=measured)
