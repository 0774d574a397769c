"""Monotone staircase activations: what `ai.patvm.PAQuantize` computes, the numpy reference.

    y = levels[k],  k = number of thresholds <= x      (NaN gives k = 0, so levels[0])

PA activations (eq. 10) are staircases with levels[0] = 0; ABC-Net activations (eq. 8-9) are staircases
with a non-zero bottom level (`patvm.approx.abc.abc_activation_staircase`). Thresholds are per tensor,
shape [N], or per channel on axis 1, shape [C, N] (a BatchNorm in front folds into per-channel
thresholds: `fold_batchnorm`). Levels have shape [N+1] or [C, N+1].

A staircase is a sum of N {0,1} planes (eq. 17-18). Two decompositions are exact:
  one-hot (the paper's V_j):     y = levels[0] + sum_j (levels[j] - levels[0]) * [v_j <= x < v_{j+1}]
  thermometer (what patvm packs): y = levels[0] + sum_j (levels[j] - levels[j-1]) * [x >= v_j]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patvm.errors import PatvmError, require


@dataclass(frozen=True)
class Staircase:
    """Thresholds [N] or [C, N] and levels [N+1] or [C, N+1], validated, float32."""

    thresholds: np.ndarray
    levels: np.ndarray

    def __post_init__(self):
        thresholds = np.asarray(self.thresholds, dtype=np.float32)
        levels = np.asarray(self.levels, dtype=np.float32)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "levels", levels)
        validate_staircase(thresholds, levels)

    @property
    def N(self) -> int:
        return int(self.thresholds.shape[-1])

    @property
    def per_channel(self) -> bool:
        return self.thresholds.ndim == 2

    def quantize(self, x: np.ndarray, axis: int = 1) -> np.ndarray:
        return staircase_quantize(x, self.thresholds, self.levels, axis)

    def thermometer_planes(self, x: np.ndarray, axis: int = 1) -> np.ndarray:
        """[N, *x.shape] bool planes [x >= v_j] (NaN compares false)."""
        t = broadcast_per_channel(self.thresholds, np.ndim(x), axis)
        with np.errstate(invalid="ignore"):
            return np.moveaxis(np.asarray(x, np.float32)[..., None] >= t, -1, 0)

    def thermometer_deltas(self) -> np.ndarray:
        """levels[j] - levels[j-1], shape [N] or [C, N]: the scale of thermometer plane j."""
        return np.diff(self.levels.astype(np.float64), axis=-1)

    def binary_planes(self) -> int | None:
        """With evenly spaced levels (levels[k] = levels[0] + k*d: every integer quantizer), the count k of
        thresholds passed is written in binary: ceil(log2(N + 1)) planes with scales d * 2^b replace N
        thermometer planes, exactly. That count, when it is fewer planes; else None."""
        steps = self.thermometer_deltas()
        planes = int(self.N).bit_length()
        if planes >= self.N or not np.all(steps == steps.reshape(-1)[0]):
            return None
        return planes


def validate_staircase(thresholds: np.ndarray, levels: np.ndarray, where: str = "PAQuantize") -> None:
    """Raise PatvmError naming the problem unless thresholds/levels form a valid staircase."""
    require(thresholds.ndim in (1, 2) and thresholds.shape[-1] >= 1,
            f"{where}: thresholds must have shape [N] or [C, N] with N >= 1, got {list(thresholds.shape)}")
    expected = thresholds.shape[:-1] + (thresholds.shape[-1] + 1,)
    require(levels.shape == expected,
            f"{where}: levels must have shape {list(expected)} (N+1 per row), got {list(levels.shape)}")
    require(bool(np.all(np.isfinite(thresholds))), f"{where}: thresholds contain NaN or infinity")
    require(bool(np.all(np.isfinite(levels))), f"{where}: levels (scales) contain NaN or infinity")
    require(bool(np.all(np.diff(thresholds, axis=-1) > 0)), f"{where}: thresholds must be strictly increasing")


def broadcast_per_channel(table: np.ndarray, rank: int, axis: int = 1) -> np.ndarray:
    """Shape a [N] or [C, N] table so that it broadcasts against x[..., None] with channels on `axis`."""
    if table.ndim == 1:
        return table
    require(0 <= axis < rank, f"per-channel table needs a channel axis inside rank {rank}")
    shape = [1] * rank + [table.shape[-1]]
    shape[axis] = table.shape[0]
    return table.reshape(shape)


def staircase_quantize(x: np.ndarray, thresholds: np.ndarray, levels: np.ndarray, axis: int = 1) -> np.ndarray:
    """levels[k] with k = #(thresholds <= x), exactly (the output is bit-identical to a level)."""
    x = np.asarray(x, dtype=np.float32)
    thresholds = np.asarray(thresholds, np.float32)
    levels = np.asarray(levels, np.float32)
    if thresholds.ndim == 2:
        require(x.ndim > axis and x.shape[axis] == thresholds.shape[0],
                f"per-channel thresholds have {thresholds.shape[0]} channels, the input has shape {list(x.shape)}")
    t = broadcast_per_channel(thresholds, x.ndim, axis)
    with np.errstate(invalid="ignore"):
        k = np.sum(x[..., None] >= t, axis=-1)
    if levels.ndim == 1:
        return levels[k]
    channel = np.arange(levels.shape[0]).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
    return levels[channel, k]


def fold_batchnorm(thresholds: np.ndarray, levels: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                   mean: np.ndarray, var: np.ndarray, eps: float = 1e-5) -> Staircase:
    """Fold y = BN(x) followed by a per-tensor staircase into a per-channel staircase on x.

    BN(x) = g * x + h per channel with g = scale / sqrt(var + eps), h = bias - g * mean. BN(x) >= v
    means x >= (v - h) / g when g > 0. A channel with g <= 0 would flip the comparison; patvm refuses it.
    """
    g = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    h = np.asarray(bias, np.float64) - g * np.asarray(mean, np.float64)
    if not np.all(g > 0):
        raise PatvmError("cannot fold a BatchNorm with a non-positive scale into thresholds")
    t = (np.asarray(thresholds, np.float64)[None, :] - h[:, None]) / g[:, None]
    lv = np.broadcast_to(np.asarray(levels, np.float32), (g.shape[0], len(levels)))
    return Staircase(t.astype(np.float32), np.ascontiguousarray(lv))
