"""Quantizers in the style of Larq: small named modules, `quantizer(x)` gives the quantized x.

Weights (approximated as a whole per layer, forward values from `patvm.approx`, bit for bit):
  PAWeightQuantizer(M)      PA eq. 6-7 forward, eq. 8-9 piecewise-linear surrogate backward
  ABCWeightQuantizer(M)     ABC-Net eq. 2-5 forward, eq. 7 straight-through backward

Activations (monotone staircases, `Staircase.quantize` forward, trainable thresholds and levels):
  PAActivationQuantizer(N)  (alias PAQuantizer)   PA eq. 10 forward, eq. 11-14 backward
  ABCActivationQuantizer(N)                       ABC-Net eq. 8-9, 11 forward, eq. 10 backward

The surrogate backward functions live in `patvm.train.surrogates`; this module decides their pieces.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from patvm.approx.abc import abc_default_shifts, approximate_weights_abc
from patvm.approx.pa import approximate_weights_pa, check_weight_pieces, pa_activation_init
from patvm.approx.staircase import Staircase
from patvm.errors import require
from patvm.train.surrogates import SurrogateStaircase, SurrogateWeight


class Quantizer(nn.Module):
    """A named quantizer. `family` ("pa" or "abc") says which paper's scheme it implements."""

    name = "quantizer"
    family = ""


# ---------------------------------------------------------------- weights


class WeightQuantizer(Quantizer):
    """W -> W_bar for a whole layer. Subclasses give `approximate(W) -> (W_bar, surrogate slope)`."""

    def __init__(self, M: int):
        super().__init__()
        self.M = int(M)

    def approximate(self, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W_bar float32 of W's shape, d W_bar_surrogate / dW, broadcastable to W's shape)."""
        raise NotImplementedError

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return SurrogateWeight.apply(weight, self)

    def quantized_weight(self, weight: torch.Tensor) -> np.ndarray:
        """W_bar as the float32 array the forward uses (what an export writes as the initializer)."""
        return np.asarray(self.approximate(weight.detach().cpu().numpy())[0], np.float32)

    def extra_repr(self) -> str:
        return f"M={self.M}"


def pa_piece_values(alphas: np.ndarray) -> np.ndarray:
    """The M+1 forward values of eq. 6 in order: alpha_1..alpha_{M/2}, 0, alpha_{M/2+1}..alpha_M."""
    half = len(alphas) // 2
    return np.concatenate([alphas[:half], [0.0], alphas[half:]]).astype(np.float64)


def pa_weight_surrogate_slope(weight: np.ndarray, alphas: np.ndarray, endpoints: np.ndarray,
                              lambda_w: float) -> np.ndarray:
    """Eq. 8-9: slope lambda_W * (jump at u_i) on the segment [s_{i-1}, s_i) around u_i.

    s_i = (u_i + u_{i+1}) / 2 (eq. 9) splits the line into M segments; segment i holds endpoint u_i, where
    the forward jumps from one piece value to the next (the jumps into and out of the zero piece are
    0 - alpha_{M/2} and alpha_{M/2+1} - 0, as in eq. 8).
    """
    jumps = np.diff(pa_piece_values(alphas))                         # [M]
    midpoints = 0.5 * (endpoints[:-1] + endpoints[1:])               # s_1..s_{M-1}
    segment = np.searchsorted(midpoints, np.asarray(weight, np.float64), side="right")
    return lambda_w * jumps[segment]


class PAWeightQuantizer(WeightQuantizer):
    """PA weights (eq. 6-7): M non-zero pieces with endpoints mean + c_i * std, alpha_i = piece mean.

    Forward: `patvm.approx.approximate_weights_pa(W, M)` exactly. Backward (eq. 8-9): the gradient is
    multiplied by lambda_W * (alpha_{i+1} - alpha_i) on the segment between the midpoints s_i around
    each endpoint, alphas and endpoints held fixed (they are statistics of W, not differentiated).
    lambda_W sets the overall gradient scale (Adam is insensitive to it; for SGD choose it near
    1 / (alpha_{i+1} - alpha_i), i.e. a few over std(W)).
    """

    name = "pa_weight"
    family = "pa"

    def __init__(self, M: int, *, lambda_w: float = 1.0, coefficients=None):
        check_weight_pieces(M)
        super().__init__(M)
        require(lambda_w > 0, f"lambda_w must be positive, got {lambda_w}")
        self.lambda_w = float(lambda_w)
        self.coefficients = None if coefficients is None else np.asarray(coefficients, np.float64)

    def approximate(self, weight):
        pa = approximate_weights_pa(weight, self.M, self.coefficients)
        return pa.w_bar, pa_weight_surrogate_slope(weight, pa.alphas, pa.endpoints, self.lambda_w)

    def extra_repr(self) -> str:
        return f"M={self.M}, lambda_w={self.lambda_w}"


class ABCWeightQuantizer(WeightQuantizer):
    """ABC-Net weights (eq. 2-5): B_i = sign(W - mean + u_i std), alpha by least squares.

    Forward: `patvm.approx.approximate_weights_abc(W, M)` exactly. Backward, eq. 7 (STE through the
    signs): dc/dW = sum_m alpha_m dc/dB_m = (sum_m alpha_m) * dc/dW_bar.
    """

    name = "abc_weight"
    family = "abc"

    def __init__(self, M: int, shifts=None):
        super().__init__(M)
        self.shifts = abc_default_shifts(M) if shifts is None else np.asarray(shifts, np.float64)
        require(self.shifts.shape == (self.M,), f"ABC-Net needs {self.M} shifts u_i, got {self.shifts.shape}")

    def approximate(self, weight):
        abc = approximate_weights_abc(weight, self.M, self.shifts)
        return abc.w_bar, np.asarray(abc.alphas.astype(np.float64).sum())


# ---------------------------------------------------------------- activations


class StaircaseTables(NamedTuple):
    """What `SurrogateStaircase` takes: sorted thresholds [.., K], levels [.., K+1] (both differentiable),
    and the detached ramp windows [.., K] and slopes [.., K] of the surrogate backward."""

    thresholds: torch.Tensor
    levels: torch.Tensor
    window_lo: torch.Tensor
    window_hi: torch.Tensor
    slopes: torch.Tensor


def merge_equal_thresholds(thresholds: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated thresholds of a sorted per-tensor table; the same function, strictly increasing."""
    keep = np.append(thresholds[:-1] != thresholds[1:], True)        # the last of each run of equals
    return thresholds[keep], np.concatenate([levels[:1], levels[1:][keep]])


def channel_major(samples, channels: int, axis: int) -> np.ndarray:
    """Samples with the channel axis moved first and the rest flattened: [C, -1]."""
    x = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    require(x.ndim > axis and x.shape[axis] == channels,
            f"per-channel init needs {channels} channels on axis {axis}, got shape {list(x.shape)}")
    return np.moveaxis(x, axis, 0).reshape(channels, -1)


class StaircaseQuantizer(Quantizer):
    """A trainable monotone staircase quantizer. Subclasses give `tables()` and `set_staircase()`.

    Thresholds are per tensor, or per channel (on axis 1) with `channels=C`.
    """

    channel_axis = 1

    def __init__(self, N: int, channels: int | None = None):
        super().__init__()
        require(isinstance(N, (int, np.integer)) and N >= 1, f"an activation quantizer needs N >= 1, got N={N}")
        require(channels is None or channels >= 1, f"channels must be a positive count, got {channels}")
        self.N = int(N)
        self.channels = channels

    def tables(self) -> StaircaseTables:
        raise NotImplementedError

    def set_staircase(self, thresholds: np.ndarray, levels: np.ndarray) -> None:
        """Set the parameters from a PA-style staircase (levels[..., 0] the value below v_1)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tables()
        return SurrogateStaircase.apply(x, t.thresholds, t.levels, t.window_lo, t.window_hi, t.slopes,
                                        self.channel_axis)

    @torch.no_grad()
    def init_from_data(self, samples) -> None:
        """Thresholds and levels from a sample of this quantizer's inputs (`pa_activation_init`)."""
        if self.channels is None:
            x = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else samples
            self.set_staircase(*pa_activation_init(x, self.N))
            return
        rows = [pa_activation_init(row, self.N) for row in channel_major(samples, self.channels, self.channel_axis)]
        self.set_staircase(np.stack([t for t, _ in rows]), np.stack([lv for _, lv in rows]))

    @torch.no_grad()
    def staircase(self) -> Staircase:
        """The float32 (thresholds, levels) the forward selects from, as a validated `Staircase`."""
        t = self.tables()
        thresholds = t.thresholds.detach().cpu().float().numpy()
        levels = t.levels.detach().cpu().float().numpy()
        if thresholds.ndim == 1:
            thresholds, levels = merge_equal_thresholds(thresholds, levels)
        elif levels.ndim == 1:
            levels = np.ascontiguousarray(np.broadcast_to(levels, thresholds.shape[:1] + levels.shape))
        return Staircase(thresholds, levels)


def inverse_softplus(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, np.float64)
    return np.where(y > 20.0, y, np.log(np.expm1(np.minimum(y, 20.0))))


class PAActivationQuantizer(StaircaseQuantizer):
    """PA activations (eq. 10): 0 below v_1, beta_i on [v_i, v_{i+1}), beta_N from v_N up.

    Trainable: thresholds v (eq. 14) and levels beta (eq. 13). v stays strictly increasing by
    construction: it is parametrised as v_1 plus gaps softplus(g_i) + min_gap, so any optimiser step
    keeps the order (and where float rounding would still merge two, v_{i+1} is the next float above
    v_i). Thresholds are per tensor, or per channel with `channels=C` (then levels are shared unless
    `per_channel_levels=True`).

    Backward (eq. 11-12): d A_bar / dA = lambda_A (beta_i - beta_{i-1}) on [t_{i-1}, t_i) with
    t_i = (v_i + v_{i+1}) / 2, t_N = v_N + lambda_Delta and t_0 = 2 v_1 - t_1 (the window around v_1
    mirrored; eq. 12 prints "2 v_0 - s_1"), 0 outside [t_0, t_N). Eq. 13: d/d beta_i = sum of the
    incoming gradient over piece i. Eq. 14: d/d v_i = -lambda_A (beta_i - beta_{i-1}) times the sum over
    [t_{i-1}, t_i); the minus sign (missing in the paper's print) makes it the derivative of the same
    ramp as eq. 11: moving a step right lowers the output.

    Initialise with `thresholds`/`levels` (levels[0] must be 0), or from data with `init_from_data`
    (`pa_activation_init`); the default is `pa_activation_init` of a unit normal sample.

    The paper gives no values for lambda_A and lambda_Delta. The defaults suit batch-normalised inputs:
    with N = 5 the pieces are about 0.3-0.6 wide, so lambda_A = 2 makes each ramp rise by roughly its
    step (slope ~1 on average, like a straight-through estimator), and lambda_Delta = 0.5 lets the
    gradient pass a little above the top threshold.
    """

    name = "pa_activation"
    family = "pa"

    def __init__(self, N: int, thresholds=None, levels=None, *, lambda_a: float = 2.0, lambda_delta: float = 0.5,
                 channels: int | None = None, per_channel_levels: bool = False, min_gap: float = 1e-4):
        super().__init__(N, channels)
        require(lambda_a > 0 and lambda_delta > 0, "lambda_a and lambda_delta must be positive")
        require(not per_channel_levels or channels is not None, "per_channel_levels needs channels=C")
        self.lambda_a, self.lambda_delta, self.min_gap = float(lambda_a), float(lambda_delta), float(min_gap)
        rows = () if channels is None else (channels,)
        level_rows = rows if per_channel_levels else ()
        self.threshold_first = nn.Parameter(torch.zeros(rows + (1,)))
        self.threshold_gaps = nn.Parameter(torch.zeros(rows + (self.N - 1,)))
        self.betas = nn.Parameter(torch.zeros(level_rows + (self.N,)))
        if thresholds is None and levels is None:
            thresholds, levels = pa_activation_init(np.zeros(0), self.N)
        require(thresholds is not None and levels is not None, "give both thresholds and levels, or neither")
        self.set_staircase(thresholds, levels)

    def thresholds(self) -> torch.Tensor:
        """v_1 < ... < v_N, [N] or [C, N], strictly increasing in the parameters' dtype."""
        gaps = nn.functional.softplus(self.threshold_gaps) + self.min_gap
        v = self.threshold_first + torch.cumsum(gaps, -1)
        # where a gap is below the float spacing (huge |v|), step to the next representable value instead
        columns = [self.threshold_first]
        for k in range(self.N - 1):
            columns.append(torch.maximum(v[..., k:k + 1], torch.nextafter(columns[-1].detach(), v.new_tensor(np.inf))))
        return torch.cat(columns, -1)

    def levels(self) -> torch.Tensor:
        """[0, beta_1, ..., beta_N] in patvm's staircase layout."""
        return torch.cat([torch.zeros_like(self.betas[..., :1]), self.betas], -1)

    def tables(self) -> StaircaseTables:
        v, levels = self.thresholds(), self.levels()
        with torch.no_grad():
            vd = v.detach()
            upper = torch.cat([0.5 * (vd[..., :-1] + vd[..., 1:]), vd[..., -1:] + self.lambda_delta], -1)  # t_1..t_N
            t0 = 2.0 * vd[..., :1] - upper[..., :1]
            lower = torch.cat([t0, upper[..., :-1]], -1)                                               # t_0..t_{N-1}
            slopes = self.lambda_a * torch.diff(levels.detach(), dim=-1)
        return StaircaseTables(v, levels, lower, upper, slopes)

    @torch.no_grad()
    def set_staircase(self, thresholds, levels) -> None:
        t = np.asarray(thresholds, np.float64)
        lv = np.asarray(levels, np.float64)
        require(t.shape[-1] == self.N and lv.shape[-1] == self.N + 1,
                f"need {self.N} thresholds and {self.N + 1} levels, got {t.shape} and {lv.shape}")
        require(t.ndim <= self.threshold_first.dim() and lv.ndim <= 2,
                f"per-channel tables {t.shape} for a per-tensor quantizer: pass channels=C")
        require(bool(np.all(lv[..., 0] == 0)), "PA levels[0] (the value below v_1) must be 0")
        require(bool(np.all(np.diff(t, axis=-1) > 0)), "PA thresholds must be strictly increasing")
        first = self.threshold_first
        self.threshold_first.copy_(torch.as_tensor(np.broadcast_to(t[..., :1], first.shape).copy()))
        gaps = inverse_softplus(np.maximum(np.diff(t, axis=-1) - self.min_gap, 1e-6))
        self.threshold_gaps.copy_(torch.as_tensor(np.broadcast_to(gaps, self.threshold_gaps.shape).copy()))
        betas = lv[..., 1:]
        if betas.ndim > self.betas.dim():          # per-channel levels given, shared levels wanted
            betas = betas.mean(axis=0)
        self.betas.copy_(torch.as_tensor(np.broadcast_to(betas, self.betas.shape).copy()))

    def extra_repr(self) -> str:
        per = "" if self.channels is None else f", channels={self.channels}"
        return f"N={self.N}, lambda_a={self.lambda_a}, lambda_delta={self.lambda_delta}{per}"


PAQuantizer = PAActivationQuantizer


class ABCActivationQuantizer(StaircaseQuantizer):
    """ABC-Net activations (eq. 8-9, 11): A = sum_n beta_n H_{v_n}(x), H_v(x) = +1 iff x >= 0.5 - v, else -1.

    A staircase with thresholds 0.5 - v_n (sorted) and bottom level -sum(beta) (`abc_activation_staircase`).
    Trainable shifts v_n and scales beta_n (per tensor). Backward, eq. 10 (STE through the clip of
    eq. 8): dA/dx = sum_n beta_n [0 <= x + v_n <= 1]; dA/dv_n = beta_n [0 <= x + v_n <= 1] (the same
    ramp, the derivative of beta_n clip(x + v_n, 0, 1)); dA/dbeta_n = H_{v_n}(x), exact.

    Initialise with `shifts`/`betas`, or from data (`init_from_data`: a PA staircase fitted with
    `pa_activation_init`, turned into shifts 0.5 - v_i and betas (levels_i - levels_{i-1}) / 2).
    """

    name = "abc_activation"
    family = "abc"

    def __init__(self, N: int, shifts=None, betas=None):
        super().__init__(N)
        self.shifts = nn.Parameter(torch.zeros(self.N))
        self.betas = nn.Parameter(torch.zeros(self.N))
        if shifts is None and betas is None:
            self.set_staircase(*pa_activation_init(np.zeros(0), self.N))
            return
        require(shifts is not None and betas is not None, "give both shifts and betas, or neither")
        with torch.no_grad():
            self.shifts.copy_(torch.as_tensor(np.asarray(shifts, np.float64).reshape(self.N)))
            self.betas.copy_(torch.as_tensor(np.asarray(betas, np.float64).reshape(self.N)))

    def tables(self) -> StaircaseTables:
        thresholds = 0.5 - self.shifts
        order = torch.argsort(thresholds.detach(), stable=True)
        sorted_t, sorted_b = thresholds[order], self.betas[order]
        b64 = sorted_b.double()
        levels = (-b64.sum() + 2.0 * torch.cat([b64.new_zeros(1), torch.cumsum(b64, 0)])).to(self.betas.dtype)
        with torch.no_grad():
            td = sorted_t.detach()
            return StaircaseTables(sorted_t, levels, td - 0.5, td + 0.5, sorted_b.detach())

    @torch.no_grad()
    def set_staircase(self, thresholds, levels) -> None:
        t = np.asarray(thresholds, np.float64).reshape(self.N)
        lv = np.asarray(levels, np.float64).reshape(self.N + 1)
        self.shifts.copy_(torch.as_tensor(0.5 - t))
        self.betas.copy_(torch.as_tensor(np.diff(lv) / 2.0))

    def extra_repr(self) -> str:
        return f"N={self.N}"
