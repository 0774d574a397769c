"""Piecewise Approximation (PA), the numpy reference (Zhu, Al-Ars, Pan, ECAI 2020).

Weights (eq. 6-7): M endpoints u_1 < ... < u_M cut the real line into M+1 pieces. The middle piece
[u_{M/2}, u_{M/2+1}) is exactly 0; every other piece i is replaced by alpha_i, the mean of the weights
that fall in it. Endpoints are mean(W) + c_i * std(W) with the coefficients c_i of `pa_endpoint_coefficients`.
The M non-zero pieces are M disjoint {0,1} planes T_i with W_bar = sum_i alpha_i T_i (eq. 15-16).

Activations (eq. 10, 17-18): N increasing thresholds v_1..v_N and levels beta_1..beta_N; below v_1 the
value is 0. In patvm's format the levels array has N+1 entries, levels[0] being the value below v_1
(0 for PA): see `patvm.approx.staircase`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patvm.errors import require

# Table 1 of the paper: the endpoints for M = 8 in units of std(W).
TABLE1_M8 = (-1.5, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 1.5)
ZERO_PIECE_HALF_WIDTH = 0.25


def check_weight_pieces(M: int) -> None:
    require(isinstance(M, (int, np.integer)) and M >= 2 and M % 2 == 0,
            f"PA needs an even number of weight pieces M >= 2, got M={M}")


def pa_endpoint_coefficients(M: int) -> np.ndarray:
    """Endpoints of the M weight pieces in units of std(W), symmetric around the mean.

    Rule (reproduces Table 1 for M = 8): the zero piece is [-0.25, +0.25] std; the K = M/2 - 1 outer
    endpoints on each side are evenly spaced over [0.5, 1.5] std (a single one sits at 1.0 std).
    M=2: +-0.25;  M=4: +-0.25, +-1.0;  M=6: +-0.25, +-0.5, +-1.5;  M=8: Table 1.
    """
    check_weight_pieces(M)
    outer = M // 2 - 1
    if outer == 0:
        positive = [ZERO_PIECE_HALF_WIDTH]
    elif outer == 1:
        positive = [ZERO_PIECE_HALF_WIDTH, 1.0]
    else:
        positive = [ZERO_PIECE_HALF_WIDTH, *np.linspace(0.5, 1.5, outer)]
    positive = np.asarray(positive, dtype=np.float64)
    return np.concatenate([-positive[::-1], positive])


@dataclass(frozen=True)
class PAWeights:
    """A PA approximation of one weight tensor (approximated as a whole, as in the paper)."""

    w_bar: np.ndarray      # approximated weights, float32, same shape as W (eq. 6)
    planes: np.ndarray     # [M, *W.shape] bool, disjoint {0,1} planes T_i (eq. 16)
    alphas: np.ndarray     # [M] float32 scales alpha_i (eq. 7)
    endpoints: np.ndarray  # [M] float64 absolute endpoints u_i

    @property
    def M(self) -> int:
        return int(self.alphas.shape[0])


def pa_piece_index(W: np.ndarray, endpoints: np.ndarray) -> np.ndarray:
    """Index 0..M of the piece each weight falls in (number of endpoints <= w); M/2 is the zero piece."""
    return np.searchsorted(np.asarray(endpoints), W, side="right")


def approximate_weights_pa(W: np.ndarray, M: int, coefficients: np.ndarray | None = None) -> PAWeights:
    """Approximate W by M pieces (eq. 6-7) and decompose into M disjoint planes (eq. 15-16)."""
    check_weight_pieces(M)
    W = np.asarray(W, dtype=np.float32)
    require(W.size > 0 and bool(np.all(np.isfinite(W))), "PA weights must be a non-empty finite tensor")
    coeffs = pa_endpoint_coefficients(M) if coefficients is None else np.asarray(coefficients, np.float64)
    require(coeffs.shape == (M,) and bool(np.all(np.diff(coeffs) > 0)),
            f"PA endpoints must be {M} strictly increasing values")
    w64 = W.astype(np.float64)
    mean, std = float(w64.mean()), float(w64.std())
    endpoints = mean + coeffs * (std if std > 0 else 1.0)
    piece = pa_piece_index(w64, endpoints)
    zero_piece = M // 2
    plane_of_piece = [p for p in range(M + 1) if p != zero_piece]   # piece index of plane i
    bounds = np.concatenate([[-np.inf], endpoints, [np.inf]])
    planes = np.stack([piece == p for p in plane_of_piece])
    alphas = np.empty(M, dtype=np.float32)
    for i, p in enumerate(plane_of_piece):
        members = w64[planes[i]]
        if members.size:
            alphas[i] = members.mean()
        else:  # an empty piece: any scale is exact; take the nearest finite bound for a sane value
            lo, hi = bounds[p], bounds[p + 1]
            alphas[i] = hi if np.isinf(lo) else lo if np.isinf(hi) else 0.5 * (lo + hi)
    w_bar = np.tensordot(alphas, planes.astype(np.float32), axes=1).astype(np.float32)
    return PAWeights(w_bar=w_bar, planes=planes, alphas=alphas, endpoints=endpoints)


def pa_activation_levels(betas: np.ndarray) -> np.ndarray:
    """PA levels in patvm's format: levels[0] = 0 below v_1, then beta_1..beta_N (eq. 10)."""
    betas = np.asarray(betas, dtype=np.float32)
    return np.concatenate([np.zeros(betas.shape[:-1] + (1,), np.float32), betas], axis=-1)


def pa_activation_init(samples: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds and levels for N activation pieces from a sample of (batch-normalised) activations.

    Thresholds are quantiles of the positive part of the sample (the paper initialises endpoints with
    positive values, which makes the bounded activation function unnecessary); each level is the mean of
    the samples in its piece, kept increasing. Returns (thresholds [N], levels [N+1]).
    """
    require(isinstance(N, (int, np.integer)) and N >= 1, f"PA needs N >= 1 activation pieces, got N={N}")
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    positive = x[x > 0]
    if positive.size < 2 * N:
        positive = np.abs(np.random.default_rng(0).standard_normal(1024))
    qs = np.quantile(positive, np.linspace(0.0, 1.0, N + 1)[:-1] + 0.5 / (N + 1))
    thresholds = np.maximum.accumulate(qs)
    thresholds = thresholds + np.arange(N) * 1e-4 * max(1e-3, float(np.std(positive)))
    bounds = np.concatenate([thresholds, [np.inf]])
    levels = [0.0]
    for j in range(N):
        members = positive[(positive >= bounds[j]) & (positive < bounds[j + 1])]
        level = members.mean() if members.size else bounds[j]
        levels.append(max(level, levels[-1] + 1e-3))
    return thresholds.astype(np.float32), np.asarray(levels, dtype=np.float32)

