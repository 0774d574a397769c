"""The model zoo: seeded, calibrated PA / ABC-Net / full-precision networks written as PA-ONNX.

    build_model("pa-resnet18", M=4, N=5, seed=0, batch=1, image_size=224) -> onnx.ModelProto

Input "input" [batch, 3, S, S] (NCHW), output "output" [batch, 1000] logits. Weights are He-initialised
random, BatchNorm statistics and quantizer thresholds come from a numpy forward pass of a seeded random
calibration batch (`patvm.zoo.builder`), so activations stay normalised through the whole depth.

Exact mode, `build_model(..., exact=True)` (`patvm zoo ... --exact`): the same networks, with every number
that enters fp32 arithmetic before the final GlobalAveragePool a short dyadic value (first-conv and
depthwise weights, PA / ABC alphas, quantizer levels, BatchNorm with epsilon 0 and a power-of-4 variance),
and every partial sum proven to fit the float32 significand while the model is built, for every input
whose values are multiples of 1/32 in [-2, 2] (`patvm.zoo.exact.dyadic_images`). Such a model computes
the same bits in any summation order, fused or not: onnxruntime at any optimisation level or thread count
and a correct compiler agree exactly up to the pool, so every difference in the logits is the pool and the
FC's own rounding (ulps). The normal models are chaotic instead: a rounding difference in one conv flips a
quantizer threshold and the flips cascade. The worst bit count is in the model's metadata
(`patvm.zoo.exact.EXACT_BITS_KEY`); a model too wide for 24 bits is refused (e.g. N = 127).
Twins have no quantizers to bound their sums: exact mode only rounds their parameters. See
`patvm.zoo.exact` for what is rounded and how the bound is kept.

Names: an architecture (`resnet18`, `resnet34`, `resnet50`, `mobilenet-v1`, `densenet121`) is the
full-precision twin; `pa-<arch>` and `abc-<arch>` are its binary versions (M, N ignored for twins). With
the same seed a twin has exactly the real weights its binary versions approximate.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

import onnx

from patvm.errors import PatvmError, require
from patvm.progress import Bar
from patvm.zoo.builder import NetBuilder
from patvm.zoo.calibrate import single_threaded_blas
from patvm.zoo.densenet import build_densenet121
from patvm.zoo.mobilenet import build_mobilenet_v1
from patvm.zoo.resnet import build_resnet
from patvm.zoo.schemes import Scheme

ARCHITECTURES: dict[str, Callable[[NetBuilder], onnx.ModelProto]] = {
    "resnet18": partial(build_resnet, depth=18),
    "resnet34": partial(build_resnet, depth=34),
    "resnet50": partial(build_resnet, depth=50),
    "mobilenet-v1": build_mobilenet_v1,
    "densenet121": build_densenet121,
}
FAMILIES = ("pa", "abc")
ZOO_NAMES: tuple[str, ...] = tuple(f"{fam}-{arch}" for fam in FAMILIES for arch in ARCHITECTURES) + tuple(ARCHITECTURES)
MIN_IMAGE_SIZE = 32   # every architecture downsamples by 32


def _split(name: str) -> tuple[str | None, str]:
    """'pa-resnet18' -> ('pa', 'resnet18'); 'resnet18' -> (None, 'resnet18')."""
    if name not in ZOO_NAMES:
        raise PatvmError(f"unknown zoo model '{name}'; known: {', '.join(ZOO_NAMES)}")
    family, _, arch = name.partition("-")
    return (family, arch) if family in FAMILIES else (None, name)


def twin_of(name: str) -> str:
    """The full-precision twin of a zoo model (a twin is its own twin)."""
    return _split(name)[1]


def _positive_int(value, what: str) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        f"{what} must be an integer >= 1, got {value!r}",
    )


def build_model(name: str, M: int = 4, N: int = 5, seed: int = 0, batch: int = 1, image_size: int = 224,
                exact: bool = False, show_progress: bool = False) -> onnx.ModelProto:
    """Build, calibrate and check one zoo model (onnx.checker full check); `exact`: see the module doc.
    `show_progress`: a bar on stderr counting the layers calibrated (`patvm.progress`)."""
    family, arch = _split(name)
    require(isinstance(exact, bool), f"exact must be True or False, got {exact!r}")
    scheme = Scheme(family, M, N, exact) if family else None
    _positive_int(batch, "batch")
    _positive_int(image_size, "image size")
    require(image_size >= MIN_IMAGE_SIZE, f"image size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    require(isinstance(seed, int) and seed >= 0, f"seed must be a non-negative integer, got {seed!r}")
    with single_threaded_blas(), \
            Bar(None, f"building {name}", unit="layers") if show_progress else contextlib.nullcontext() as bar:
        return ARCHITECTURES[arch](NetBuilder(name, scheme, seed, batch, image_size, exact, bar))


__all__ = ["ARCHITECTURES", "ZOO_NAMES", "build_model", "twin_of"]
