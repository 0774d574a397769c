"""The two autograd functions behind every quantizer: exact forward, piecewise-linear surrogate backward.

`SurrogateWeight`: W -> W_bar. The forward value comes from the numpy reference (`patvm.approx`) so the
trained model and its export agree bit for bit; the backward multiplies the incoming gradient by a
per-element surrogate slope the quantizer supplies (PA eq. 8-9, ABC-Net eq. 7).

`SurrogateStaircase`: x -> levels[k], k = #(thresholds <= x), the `Staircase.quantize` semantics. Its
backward treats the staircase as a sum of K steps, step n of height levels[n+1] - levels[n] at
thresholds[n], each replaced by a ramp for the gradient: slope slopes[n] on [window_lo[n], window_hi[n])
and flat elsewhere. With those ramps held in place relative to their thresholds (the windows move with
the threshold, their widths are constants) the surrogate function is

    S(x) = const + sum_n slopes[n] * clip(x - window_lo[n], 0, window_hi[n] - window_lo[n])

and the backward returns its exact partial derivatives:
    dS/dx            = sum_n slopes[n] * [window_lo[n] <= x < window_hi[n]]          (PA eq. 11)
    dS/dthresholds[n] = -slopes[n] * [window_lo[n] <= x < window_hi[n]]              (PA eq. 14)
while the levels get the derivative of the exact forward, which is linear in them:
    dy/dlevels[j]    = [k(x) = j]                                                   (PA eq. 13)
The quantizer decides the windows and slopes: PA's t_i (eq. 12) and lambda_A (eq. 11), or ABC-Net's
clip window of eq. 8/10.

Tables are per tensor, shape [K] (or [K+1] for levels), or per channel on `channel_axis`, shape [C, K].
"""
from __future__ import annotations

import numpy as np
import torch


def table_column(table: torch.Tensor, n: int, rank: int, channel_axis: int) -> torch.Tensor:
    """Entry n of a [S] table (a scalar) or column n of a [C, S] table shaped to broadcast on `channel_axis`."""
    if table.dim() == 1:
        return table[n]
    shape = [1] * rank
    shape[channel_axis] = table.shape[0]
    return table[:, n].reshape(shape)


def count_at_or_below(x: torch.Tensor, table: torch.Tensor, channel_axis: int) -> torch.Tensor:
    """#(table entries <= x) for every element (int64, x's shape); table [S] or per channel [C, S].

    One comparison per entry (tables are small; faster than torch.searchsorted here). NaN counts 0.
    """
    table = table.to(x.dtype)
    count = torch.zeros(x.shape, dtype=torch.uint8 if table.shape[-1] < 255 else torch.int64, device=x.device)
    for n in range(table.shape[-1]):
        count += x >= table_column(table, n, x.dim(), channel_axis)
    return count.long()


def _flat_index(index: torch.Tensor, shape: torch.Size, channel_axis: int) -> torch.Tensor:
    """Index into a flattened [S] table (index itself) or [C, S] table (c * S + index)."""
    if len(shape) == 1:
        return index
    rows_shape = [1] * index.dim()
    rows_shape[channel_axis] = shape[0]
    return index + torch.arange(shape[0], device=index.device).reshape(rows_shape) * shape[1]


def table_lookup(table: torch.Tensor, index: torch.Tensor, channel_axis: int) -> torch.Tensor:
    """table[index] (per tensor) or table[c, index] (per channel): selected, never computed."""
    flat = _flat_index(index, table.shape, channel_axis)
    return table.reshape(-1).index_select(0, flat.reshape(-1)).reshape(flat.shape)


def table_sums(values: torch.Tensor, index: torch.Tensor, shape: torch.Size, channel_axis: int) -> torch.Tensor:
    """Sums of `values` grouped by `index` (and by channel for a [C, S] shape), as a tensor of `shape`."""
    flat = _flat_index(index, shape, channel_axis).reshape(-1)
    return torch.bincount(flat, weights=values.reshape(-1), minlength=shape.numel()).reshape(shape)


def ramp_membership(window_lo: torch.Tensor, window_hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the line at every window end: (sorted cuts [.., 2K], member [.., 2K+1, K]) where member[j, n]
    says whether segment j (x with exactly j cuts <= x) lies inside window n = [lo_n, hi_n)."""
    cuts = torch.sort(torch.cat([window_lo, window_hi], -1), -1).values
    left = torch.cat([torch.full_like(cuts[..., :1], -torch.inf), cuts], -1)       # left end of each segment
    member = (window_lo.unsqueeze(-2) <= left.unsqueeze(-1)) & (left.unsqueeze(-1) < window_hi.unsqueeze(-2))
    return cuts, member


class SurrogateWeight(torch.autograd.Function):
    """W_bar = quantizer.approximate(W) forward; grad_W = grad_W_bar * slope backward."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, quantizer) -> torch.Tensor:
        w_bar, slope = quantizer.approximate(weight.detach().cpu().numpy())
        ctx.save_for_backward(torch.as_tensor(np.asarray(slope), device=weight.device).to(weight.dtype))
        return torch.as_tensor(np.asarray(w_bar, np.float32), device=weight.device).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad_w_bar: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return grad_w_bar * slope, None


class SurrogateStaircase(torch.autograd.Function):
    """y = levels[#(thresholds <= x)]; backward as in the module docstring.

    The backward cuts the line at the 2K window ends, so each element needs one search: its segment
    gives its slope (the sum over the windows holding the segment), and per-segment sums of the incoming
    gradient give the threshold gradients; the level gradients are per-level sums.
    """

    @staticmethod
    def forward(ctx, x, thresholds, levels, window_lo, window_hi, slopes, channel_axis: int):
        k = count_at_or_below(x, thresholds, channel_axis)
        ctx.save_for_backward(x, k, thresholds, levels, window_lo, window_hi, slopes)
        ctx.channel_axis = channel_axis
        return table_lookup(levels.to(x.dtype), k, channel_axis)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, k, thresholds, levels, lo, hi, slopes = ctx.saved_tensors
        axis, dtype = ctx.channel_axis, x.dtype
        cuts, member = ramp_membership(lo.to(dtype), hi.to(dtype))
        member = member.to(dtype)                                                # [.., 2K+1, K]
        slopes = slopes.to(dtype)
        segment = count_at_or_below(x, cuts, axis)
        grad_x = grad_thresholds = grad_levels = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y * table_lookup((member * slopes.unsqueeze(-2)).sum(-1), segment, axis)
        if ctx.needs_input_grad[1]:
            grad_per_segment = table_sums(grad_y, segment, member.shape[:-1], axis)
            grad_thresholds = (-(grad_per_segment.unsqueeze(-1) * member).sum(-2) * slopes).to(thresholds.dtype)
        if ctx.needs_input_grad[2]:
            grad_levels = table_sums(grad_y, k, levels.shape, axis).to(levels.dtype)
        return grad_x, grad_thresholds, grad_levels, None, None, None, None
