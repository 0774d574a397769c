"""The custom backward functions against finite differences of their surrogate functions, in float64.

Each surrogate is written here from the papers' equations, independently of `patvm.train`:
  PA weights (eq. 8-9):        piecewise linear in W, slope lambda_W (jump at u_i) between the midpoints s_i
  PA activations (eq. 11-12):  S = sum_i lambda_A (beta_i - beta_{i-1}) clip(x - t_{i-1}, 0, t_i - t_{i-1}),
                               windows moving with their threshold v_i (eq. 14), the staircase for beta (eq. 13)
  ABC-Net weights (eq. 7):     (sum_m alpha_m) W
  ABC-Net activations (eq. 10): S = sum_n beta_n clip(x + v_n, 0, 1), eq. 8-9 itself for beta
alphas, endpoints and window widths are statistics of the base point and held fixed, as the backward does.
"""
import numpy as np
import pytest
import torch

from patvm.approx import abc_activation, approximate_weights_abc, approximate_weights_pa, staircase_quantize
from patvm.train import ABCActivationQuantizer, ABCWeightQuantizer, PAQuantizer, PAWeightQuantizer
from patvm.train.surrogates import SurrogateStaircase

EPS = 1e-6


def central_difference(f, x: np.ndarray) -> np.ndarray:
    """d f(x) / dx for a scalar f, one coordinate at a time."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += EPS
        down[i] -= EPS
        grad[i] = (f(up) - f(down)) / (2 * EPS)
    return grad


def away_from(values: np.ndarray, knots: np.ndarray, margin: float = 1e-4) -> np.ndarray:
    """Move values lying within `margin` of a knot off it (finite differences need a smooth point)."""
    knots = np.ravel(knots)
    near = np.min(np.abs(values[..., None] - knots), axis=-1) < margin
    return np.where(near, values + 3 * margin, values)


# ---------------------------------------------------------------- PA weights


def pa_weight_surrogate(w: np.ndarray, alphas: np.ndarray, endpoints: np.ndarray, lambda_w: float) -> np.ndarray:
    """Eq. 8-9 integrated: knots at s_i = (u_i + u_{i+1}) / 2, slope lambda_W (alpha_{i+1} - alpha_i) between."""
    M = len(alphas)
    values = np.insert(alphas.astype(np.float64), M // 2, 0.0)          # alpha_1..alpha_{M/2}, 0, ..., alpha_M
    slopes = lambda_w * np.diff(values)                                   # one per segment, M segments
    s = (endpoints[:-1] + endpoints[1:]) / 2
    knots = np.concatenate([[-10.0], s, [10.0]])        # |w| < 10 here
    heights = np.concatenate([[0.0], np.cumsum(slopes * np.diff(knots))])
    return np.interp(w, knots, heights)


@pytest.mark.parametrize("M,lambda_w", [(2, 1.0), (4, 3.0), (8, 0.5)])
def test_pa_weight_backward_is_the_eq8_surrogate_derivative(M, lambda_w):
    rng = np.random.default_rng(M)
    w = rng.standard_normal((6, 3, 3, 3)) * 0.2
    pa = approximate_weights_pa(w, M)
    w = away_from(w, (pa.endpoints[:-1] + pa.endpoints[1:]) / 2)
    pa = approximate_weights_pa(w, M)
    g = rng.standard_normal(w.shape)
    wt = torch.tensor(w, requires_grad=True)
    (grad,) = torch.autograd.grad(PAWeightQuantizer(M, lambda_w=lambda_w)(wt), wt, torch.tensor(g))
    fd = central_difference(lambda v: float(np.sum(g * pa_weight_surrogate(v, pa.alphas, pa.endpoints, lambda_w))), w)
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-6, atol=1e-8)


def test_pa_weight_slopes_follow_eq8_case_by_case():
    """M = 4: segments (-inf, s1], [s1, s2], [s2, s3], [s3, inf) with slopes a2-a1, 0-a2, a3-0, a4-a3."""
    w = np.random.default_rng(0).standard_normal(4000)
    pa = approximate_weights_pa(w, 4)
    a1, a2, a3, a4 = pa.alphas.astype(np.float64)
    s1, s2, s3 = (pa.endpoints[:-1] + pa.endpoints[1:]) / 2
    wt = torch.tensor(w, requires_grad=True)
    (grad,) = torch.autograd.grad(PAWeightQuantizer(4, lambda_w=2.0)(wt), wt, torch.ones_like(wt))
    grad = grad.numpy()
    for lo, hi, slope in ((-np.inf, s1, a2 - a1), (s1, s2, 0 - a2), (s2, s3, a3 - 0), (s3, np.inf, a4 - a3)):
        inside = (w > lo) & (w < hi)
        assert inside.any()
        np.testing.assert_allclose(grad[inside], 2.0 * slope, rtol=1e-6)


# ---------------------------------------------------------------- ABC weights


def test_abc_weight_backward_is_the_eq7_ste():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 4, 3, 3)) * 0.1
    abc = approximate_weights_abc(w, 3)
    g = rng.standard_normal(w.shape)
    wt = torch.tensor(w, requires_grad=True)
    (grad,) = torch.autograd.grad(ABCWeightQuantizer(3)(wt), wt, torch.tensor(g))
    surrogate_scale = float(abc.alphas.astype(np.float64).sum())
    fd = central_difference(lambda v: float(np.sum(g[:1, :1] * surrogate_scale * v)), w[:1, :1])
    np.testing.assert_allclose(grad.numpy()[:1, :1], fd, rtol=1e-6)
    np.testing.assert_allclose(grad.numpy(), g * surrogate_scale, rtol=1e-12)


# ---------------------------------------------------------------- PA activations


def pa_windows(v: np.ndarray, lambda_delta: float) -> np.ndarray:
    """Eq. 12: t_0..t_N along the last axis, t_0 = 2 v_1 - t_1 (the window around v_1 mirrored)."""
    inner = (v[..., :-1] + v[..., 1:]) / 2
    t_n = v[..., -1:] + lambda_delta
    upper = np.concatenate([inner, t_n], -1)
    return np.concatenate([2 * v[..., :1] - upper[..., :1], upper], -1)


def per_channel(table: np.ndarray, n: int, rank: int) -> np.ndarray:
    """Column n of a [N] or [C, N] table, broadcastable against a [B, C, ...] input."""
    if table.ndim == 1:
        return table[n]
    return table[:, n].reshape([1, -1] + [1] * (rank - 2))


def pa_activation_surrogate(x, v, levels, offsets, widths, lambda_a):
    """Eq. 11 integrated: one ramp per step i with slope lambda_A (beta_i - beta_{i-1}) on [t_{i-1}, t_i);
    the window starts at v_i - offsets_i and has width widths_i (both fixed), so it moves with v_i."""
    out = np.zeros_like(x)
    jumps = np.diff(levels, axis=-1)
    for i in range(v.shape[-1]):
        start = per_channel(v, i, x.ndim) - per_channel(offsets, i, x.ndim)
        ramp = np.clip(x - start, 0.0, per_channel(widths, i, x.ndim))
        out = out + lambda_a * per_channel(jumps, i, x.ndim) * ramp
    return out


@pytest.mark.parametrize("N,channels", [(1, None), (3, None), (5, None), (4, 3)])
def test_pa_activation_backward_is_the_eq11_to_14_surrogate_derivative(N, channels):
    rng = np.random.default_rng(10 * N)
    lambda_a, lambda_delta = 1.7, 0.6
    rows = () if channels is None else (channels,)
    v = np.cumsum(rng.uniform(0.2, 0.6, rows + (N,)), axis=-1)
    levels = np.concatenate([np.zeros(rows + (1,)), np.cumsum(rng.uniform(0.1, 0.8, rows + (N,)), -1)], -1)
    q = PAQuantizer(N, v, levels, lambda_a=lambda_a, lambda_delta=lambda_delta, channels=channels,
                    per_channel_levels=channels is not None).double()
    tables = q.tables()
    v = tables.thresholds.detach().numpy()                 # the module's own v (softplus round trip)
    levels = tables.levels.detach().numpy()
    t = pa_windows(v, lambda_delta)
    np.testing.assert_allclose(tables.window_lo.numpy(), t[..., :-1], rtol=1e-12)
    np.testing.assert_allclose(tables.window_hi.numpy(), t[..., 1:], rtol=1e-12)

    x = rng.uniform(-0.5, v.max() + 1.0, (4, channels or 2, 3, 3))
    x = away_from(x, np.concatenate([t.ravel(), v.ravel()]))
    g = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    y = SurrogateStaircase.apply(xt, *tables, 1)
    np.testing.assert_array_equal(y.detach().numpy(), staircase_quantize(x, v, levels))
    grad_x, grad_v, grad_levels = torch.autograd.grad(y, [xt, tables.thresholds, tables.levels], torch.tensor(g))

    offsets, widths = v - t[..., :-1], np.diff(t, axis=-1)
    def surrogate(xx, vv):
        return float(np.sum(g * pa_activation_surrogate(xx, vv, levels, offsets, widths, lambda_a)))

    np.testing.assert_allclose(grad_x.numpy(), central_difference(lambda xx: surrogate(xx, v), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_v.numpy(), central_difference(lambda vv: surrogate(x, vv), v), rtol=1e-6, atol=1e-8)
    # eq. 13: the levels enter the exact staircase linearly: d/d levels[j] = sum of g over piece j
    k = np.sum(x[..., None] >= (v if channels is None else v[None, :, None, None, :]), -1)
    def staircase(lv):
        return float(np.sum(g * (lv[k] if channels is None else lv[np.arange(channels)[:, None, None], k])))

    np.testing.assert_allclose(grad_levels.numpy(), central_difference(staircase, levels), rtol=1e-6, atol=1e-8)


def test_pa_activation_gradients_reach_the_parameters():
    """Through the module: betas get the eq. 13 sums, the threshold parameters the chain rule of eq. 14."""
    q = PAQuantizer(3, [0.2, 0.7, 1.5], [0.0, 0.4, 1.0, 2.0]).double()
    x = torch.linspace(-1, 3, 101, dtype=torch.float64)
    g = torch.cos(torch.arange(101, dtype=torch.float64))
    tables = q.tables()
    y = SurrogateStaircase.apply(x, *tables, 1)
    grad_v, grad_levels = torch.autograd.grad(y, [tables.thresholds, tables.levels], g)
    (q(x) * g).sum().backward()
    np.testing.assert_allclose(q.betas.grad.numpy(), grad_levels[1:].numpy(), rtol=1e-12)
    np.testing.assert_allclose(q.threshold_first.grad.numpy(), [grad_v.sum().item()], rtol=1e-10)


# ---------------------------------------------------------------- ABC activations


def test_abc_activation_backward_is_the_eq10_surrogate_derivative():
    rng = np.random.default_rng(5)
    shifts = np.array([0.3, -0.4, 0.05])
    betas = np.array([0.6, 0.3, 1.1])
    q = ABCActivationQuantizer(3, shifts, betas).double()
    shifts, betas = q.shifts.detach().numpy().copy(), q.betas.detach().numpy().copy()   # float32-rounded
    x = away_from(rng.uniform(-1.5, 2.0, (3, 2, 4, 4)), np.concatenate([-shifts, 1 - shifts, 0.5 - shifts]))
    g = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    y = q(xt)
    np.testing.assert_allclose(y.detach().numpy(), abc_activation(x, shifts, betas), rtol=1e-12)
    (y * torch.tensor(g)).sum().backward()
    def surrogate(xx, vv):
        return float(np.sum(g * sum(b * np.clip(xx + s, 0, 1) for s, b in zip(vv, betas))))

    np.testing.assert_allclose(xt.grad.numpy(), central_difference(lambda xx: surrogate(xx, shifts), x),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(q.shifts.grad.numpy(), central_difference(lambda vv: surrogate(x, vv), shifts),
                               rtol=1e-6, atol=1e-8)
    def forward(bb):
        return float(np.sum(g * abc_activation(x, shifts, bb)))

    np.testing.assert_allclose(q.betas.grad.numpy(), central_difference(forward, betas), rtol=1e-6, atol=1e-8)
