"""From a full-precision model to a multiple-binary one, the fine-tuning start of PA sec. 3.3 / ABC-Net sec. 3.3.

`to_multibinary` swaps the Conv2d layers (all but the first by default; Linear layers stay full
precision) for PA or ABC-Net binary convolutions holding the same weights. `calibrate_activation_quantizers`
then initialises each activation quantizer from the activations it actually sees (`pa_activation_init`),
one quantizer after the other so every one is fitted to inputs already passed through the ones before it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from patvm.errors import require
from patvm.train.layers import ABCConv2d, PAConv2d, QuantConv2d
from patvm.train.quantizers import (
    ABCActivationQuantizer,
    ABCWeightQuantizer,
    PAActivationQuantizer,
    PAWeightQuantizer,
    StaircaseQuantizer,
)

FAMILIES = {
    "pa": (PAConv2d, PAActivationQuantizer, PAWeightQuantizer),
    "abc": (ABCConv2d, ABCActivationQuantizer, ABCWeightQuantizer),
}


def _convs_in_order(model: nn.Module) -> list[tuple[nn.Module, str, nn.Conv2d]]:
    """(parent, attribute name, conv) for every plain Conv2d, in registration (= Sequential) order."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and not isinstance(child, QuantConv2d):
                found.append((parent, name, child))
    return found


def to_multibinary(model: nn.Module, family: str = "pa", M: int = 4, N: int = 5, keep_first_conv: bool = True,
                   activation_kwargs: dict | None = None, weight_kwargs: dict | None = None) -> nn.Module:
    """A deep copy of `model` with its Conv2d layers (but the first) as `family` binary convolutions."""
    require(family in FAMILIES, f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    layer_cls, activation_cls, weight_cls = FAMILIES[family]
    model = copy.deepcopy(model)
    convs = _convs_in_order(model)
    for parent, name, conv in convs[1 if keep_first_conv else 0:]:
        binary = layer_cls.from_float(conv, activation_cls(N, **(activation_kwargs or {})),
                                      weight_cls(M, **(weight_kwargs or {})))
        setattr(parent, name, binary)
    return model


@torch.no_grad()
def calibrate_activation_quantizers(model: nn.Module, x: torch.Tensor) -> int:
    """Initialise every activation quantizer of `model` from its inputs on batch `x` (inference mode).

    Returns the number of quantizers calibrated.
    """
    quantizers = [m for m in model.modules() if isinstance(m, StaircaseQuantizer)]
    was_training = model.training
    model.eval()
    try:
        for quantizer in quantizers:
            seen = []
            hook = quantizer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))  # noqa: B023 - the hook runs in this iteration
            try:
                model(x)
            finally:
                hook.remove()
            quantizer.init_from_data(torch.cat(seen))
    finally:
        model.train(was_training)
    return len(quantizers)
