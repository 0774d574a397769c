"""ABC-Net, the numpy reference (Lin, Zhao, Pan, NIPS 2017): {-1,+1} bases.

Weights (eq. 1-5): B_i = sign(W - mean(W) + u_i * std(W)) (sign(0) = +1), alpha = argmin ||W - B alpha||^2
(least squares, with a tiny ridge for the rank deficiency the paper mentions). W_bar = sum_i alpha_i B_i.

Activations (eq. 8-9): H_v(x) = sign(clip(x + v, 0, 1) - 0.5) = +1 iff x >= 0.5 - v, and
A = sum_n beta_n H_{v_n}(x). That is a monotone staircase with thresholds 0.5 - v_n and a non-zero
bottom level -sum(beta): `abc_activation_staircase` turns it into patvm's (thresholds, levels) form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patvm.errors import require


def abc_default_shifts(M: int) -> np.ndarray:
    """u_i evenly spaced over [-1, 1] (the paper's choice); a single base uses u = 0."""
    require(isinstance(M, (int, np.integer)) and M >= 1, f"ABC-Net needs M >= 1 weight bases, got M={M}")
    return np.zeros(1) if M == 1 else np.linspace(-1.0, 1.0, M)


@dataclass(frozen=True)
class ABCWeights:
    w_bar: np.ndarray   # float32, same shape as W
    bases: np.ndarray   # [M, *W.shape] int8 in {-1, +1}
    alphas: np.ndarray  # [M] float32


def approximate_weights_abc(W: np.ndarray, M: int, shifts: np.ndarray | None = None) -> ABCWeights:
    """Eq. 2-5: fixed sign bases, scales by least squares."""
    W = np.asarray(W, dtype=np.float32)
    require(W.size > 0 and bool(np.all(np.isfinite(W))), "ABC-Net weights must be a non-empty finite tensor")
    u = abc_default_shifts(M) if shifts is None else np.asarray(shifts, np.float64)
    w64 = W.astype(np.float64)
    centred = w64 - w64.mean()
    std = float(w64.std()) or 1.0
    bases = np.stack([np.where(centred + ui * std >= 0, 1, -1) for ui in u]).astype(np.int8)
    B = bases.reshape(len(u), -1).T.astype(np.float64)
    alphas = np.linalg.solve(B.T @ B + 1e-6 * np.eye(len(u)), B.T @ w64.ravel()).astype(np.float32)
    w_bar = np.tensordot(alphas, bases.astype(np.float32), axes=1).astype(np.float32)
    return ABCWeights(w_bar=w_bar, bases=bases, alphas=alphas)


def abc_activation_staircase(shifts: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds [N'], levels [N'+1]) equal to sum_n beta_n H_{v_n}(x); equal thresholds merge."""
    v = np.asarray(shifts, np.float64).ravel()
    b = np.asarray(betas, np.float64).ravel()
    require(v.shape == b.shape and v.size >= 1, "ABC-Net activation needs one beta per shift v")
    t = 0.5 - v
    order = np.argsort(t, kind="stable")
    t, b = t[order], b[order]
    uniq, inverse = np.unique(t, return_inverse=True)
    merged = np.zeros(uniq.shape)
    np.add.at(merged, inverse, b)
    levels = -merged.sum() + 2.0 * np.concatenate([[0.0], np.cumsum(merged)])
    return uniq.astype(np.float32), levels.astype(np.float32)


def abc_activation(x: np.ndarray, shifts: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Direct eq. 8-9 evaluation (for checking `abc_activation_staircase`)."""
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for v, beta in zip(np.ravel(shifts), np.ravel(betas)):
        out += beta * np.where(np.clip(x + v, 0.0, 1.0) >= 0.5, 1.0, -1.0)
    return out
