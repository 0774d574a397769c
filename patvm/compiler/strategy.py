"""Per-layer strategy: bit-serial, or the dequantized fp32 conv on the quantizer's exact output.

Both are exact computations of the same layer; which is faster depends on M x N and the target. Popcount
throughput per fp32 MAC decides: with W weight planes and A activation planes a layer costs W*A/64 words
per MAC on the bit-serial path and 1 MAC on the fp32 path, so bit-serial wins while
W * A < 64 * (popcount words/s) / (fp32 MACs/s) -- the target's `bitserial_max_plane_pairs`.

The x86 crossovers below are set from benchmarks/layers.py on an AVX2-only AMD EPYC (busy machine, 1 thread):
bit-serial (M,N)=(2,2) ran 1.15-1.7x faster than onnxruntime fp32 on ResNet18's 3x3 layers, and TVM's own
fp32 conv (what the fall-back runs) 1.5x slower than onnxruntime, which puts the break-even near 8 plane pairs;
AVX-512 VPOPCNTDQ peaks measured on a Sapphire Rapids Xeon (1.15 T bit-MAC/s vs 108 G fp32 MAC/s per
core) give ~10. ARM and CUDA values are estimates. `patvm tune` replaces the estimate by measurements per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("auto", "bit-serial", "fp32")
DEFAULT_MAX_PLANE_PAIRS = {"x86": 8, "arm": 14, "cuda": 64, "cpu": 8}


@dataclass(frozen=True)
class StrategyPolicy:
    mode: str = "auto"                  # "auto", "bit-serial" (always, where exact) or "fp32" (never)
    max_plane_pairs: int = 8
    measured: dict | None = None        # workload key -> "bit-serial" / "fp32" (from `patvm tune`)

    def choose(self, workload: str, plane_pairs: int) -> tuple[str, str]:
        """(strategy, reason) for a layer with `plane_pairs` = weight planes x activation planes."""
        if self.mode != "auto":
            return self.mode, f"strategy forced to {self.mode}"
        if self.measured and workload in self.measured:
            choice = self.measured[workload]
            return choice["strategy"], f"measured: {choice.get('note', '')}".strip()
        if plane_pairs <= self.max_plane_pairs:
            return "bit-serial", ""
        return "fp32", (f"M*N={plane_pairs} > {self.max_plane_pairs}: dequantized fp32 is faster on this target "
                        "(estimate; `patvm tune` measures)")


def default_policy(spec, mode: str = "auto", measured: dict | None = None) -> StrategyPolicy:
    from patvm.errors import PatvmError
    if mode not in STRATEGIES:
        raise PatvmError(f"unknown strategy {mode!r}; one of {', '.join(STRATEGIES)}")
    limit = spec.extra.get("bitserial_max_plane_pairs") if spec.extra else None
    return StrategyPolicy(mode, int(limit or DEFAULT_MAX_PLANE_PAIRS.get(spec.family, 8)), measured)

