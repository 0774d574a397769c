"""The numpy forward pass the zoo calibrates with: a small batch of seeded random images goes through
the network as it is built, so that every BatchNorm gets running statistics that normalise the
activations it really sees, and every quantizer gets thresholds inside the distribution it really sees.

Only what the zoo's graphs use: conv (dense or depthwise), BatchNorm, pooling. float32 throughout, the
same arithmetic onnxruntime does (up to summation order).
"""
from __future__ import annotations

import contextlib

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from patvm.errors import require
from patvm.zoo.exact import dyadic_images

BN_EPS = 1e-5


def single_threaded_blas():
    """The calibration matmuls are small: one BLAS thread beats several contending for busy cores
    (measured 10-50x on a loaded 2-core machine). Uses threadpoolctl when it is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def calibration_images(seed: int, image_size: int, exact: bool = False) -> np.ndarray:
    """[n, 3, S, S] standard-normal images (a seeded stream of their own, apart from the weights), or in
    exact mode the dyadic images exact models take (`patvm.zoo.exact.dyadic_images`).

    Two images at ImageNet sizes; more at small sizes so the deep layers (1x1 spatially) still see
    enough samples per channel for usable BatchNorm statistics.
    """
    n = 2 if image_size >= 112 else 8
    rng = np.random.default_rng([seed, 1])
    shape = (n, 3, image_size, image_size)
    if exact:
        return dyadic_images(rng, shape)
    return rng.standard_normal(shape, dtype=np.float32)


def _pad(x: np.ndarray, pad: int, value: float = 0.0) -> np.ndarray:
    if pad == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=value)


def _windows(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """[n, c, oh, ow, k, k] strided view of the k x k windows."""
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1, pad: int = 0, group: int = 1) -> np.ndarray:
    """x [n, C, H, W] * w [O, C/group, k, k] -> [n, O, OH, OW]; dense (group 1) or depthwise (group C = O)."""
    n, c = x.shape[:2]
    o, cg, k, _ = w.shape
    xp = _pad(x, pad)
    if group == 1:
        require(cg == c, f"conv expects {cg} input channels, got {c}")
        if k == 1:
            cols = xp[:, :, ::stride, ::stride].transpose(0, 2, 3, 1)
        else:
            cols = _windows(xp, k, stride).transpose(0, 2, 3, 1, 4, 5)
        oh, ow = cols.shape[1:3]
        out = cols.reshape(n * oh * ow, -1) @ w.reshape(o, -1).T
        return np.ascontiguousarray(out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))
    require(group == c == o and cg == 1, "only dense and depthwise convolutions are supported")
    win = _windows(xp, k, stride)
    return np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True).astype(np.float32)


def batchnorm(x: np.ndarray, scale, bias, mean, var, eps: float = BN_EPS) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    g = (np.asarray(scale, np.float32) / np.sqrt(np.asarray(var, np.float32) + np.float32(eps))).reshape(shape)
    return ((x - np.asarray(mean, np.float32).reshape(shape)) * g + np.asarray(bias, np.float32).reshape(shape))


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (axis 1) mean and variance over batch and space: a BatchNorm's running statistics."""
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    return x64.mean(axis=axes).astype(np.float32), x64.var(axis=axes).astype(np.float32)


def maxpool(x: np.ndarray, k: int, stride: int, pad: int = 0) -> np.ndarray:
    return _windows(_pad(x, pad, -np.inf), k, stride).max(axis=(4, 5))


def avgpool(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    return _windows(x, k, stride).mean(axis=(4, 5), dtype=np.float32)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
