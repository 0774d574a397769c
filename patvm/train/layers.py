"""Quantized layers in the style of Larq: nn.Conv2d / nn.Linear that quantize their input and kernel.

    PAConv2d(32, 64, 3, padding=1, input_quantizer=PAQuantizer(5), kernel_quantizer=PAWeightQuantizer(4))

forward: y = conv(input_quantizer(x), kernel_quantizer(W)) + b  -- PA eq. 19 / ABC-Net eq. 12 computed
densely (the bit-serial form is the compiler's business). A quantizer left as None means that side
stays full precision. PA layers take PA quantizers, ABC layers ABC ones; QuantConv2d/QuantLinear take any.
"""
from __future__ import annotations

import torch
from torch import nn

from patvm.errors import require
from patvm.train.quantizers import StaircaseQuantizer, WeightQuantizer


class QuantizedLayer:
    """Mixin: the input/kernel quantizer slots shared by the conv and linear layers."""

    family = ""   # "" accepts quantizers of any family

    def _set_quantizers(self, input_quantizer, kernel_quantizer) -> None:
        for role, quantizer, kind in (("input_quantizer", input_quantizer, StaircaseQuantizer),
                                      ("kernel_quantizer", kernel_quantizer, WeightQuantizer)):
            require(quantizer is None or isinstance(quantizer, kind),
                    f"{type(self).__name__}: {role} must be a {kind.__name__} or None, got {type(quantizer).__name__}")
            require(quantizer is None or not self.family or quantizer.family == self.family,
                    f"{type(self).__name__} takes {self.family.upper()} quantizers, got {type(quantizer).__name__}")
        self.input_quantizer = input_quantizer
        self.kernel_quantizer = kernel_quantizer

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def quantized_kernel(self) -> torch.Tensor:
        return self.weight if self.kernel_quantizer is None else self.kernel_quantizer(self.weight)


class QuantConv2d(QuantizedLayer, nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 input_quantizer: StaircaseQuantizer | None = None, kernel_quantizer: WeightQuantizer | None = None,
                 bias: bool = True, **conv_kwargs):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias,
                           **conv_kwargs)
        self._set_quantizers(input_quantizer, kernel_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantize_input(x), self.quantized_kernel(), self.bias)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, input_quantizer=None, kernel_quantizer=None):
        """This layer with `conv`'s hyper-parameters and a copy of its weights (the fine-tuning start)."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    input_quantizer, kernel_quantizer, bias=conv.bias is not None, dilation=conv.dilation,
                    groups=conv.groups, padding_mode=conv.padding_mode)
        layer.load_state_dict(conv.state_dict(), strict=False)
        return layer.to(conv.weight.device, conv.weight.dtype)


class QuantLinear(QuantizedLayer, nn.Linear):
    def __init__(self, in_features: int, out_features: int, input_quantizer: StaircaseQuantizer | None = None,
                 kernel_quantizer: WeightQuantizer | None = None, bias: bool = True, **linear_kwargs):
        nn.Linear.__init__(self, in_features, out_features, bias=bias, **linear_kwargs)
        self._set_quantizers(input_quantizer, kernel_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.quantize_input(x), self.quantized_kernel(), self.bias)

    @classmethod
    def from_float(cls, linear: nn.Linear, input_quantizer=None, kernel_quantizer=None):
        layer = cls(linear.in_features, linear.out_features, input_quantizer, kernel_quantizer,
                    bias=linear.bias is not None)
        layer.load_state_dict(linear.state_dict(), strict=False)
        return layer.to(linear.weight.device, linear.weight.dtype)


class PAConv2d(QuantConv2d):
    """A PA binary convolution (PA eq. 6-19): PA activation and weight quantizers."""

    family = "pa"


class PALinear(QuantLinear):
    """A PA binary fully connected layer."""

    family = "pa"


class ABCConv2d(QuantConv2d):
    """An ABC-Net binary convolution (ABC-Net eq. 1-12): ABC activation and weight quantizers."""

    family = "abc"


class ABCLinear(QuantLinear):
    """An ABC-Net binary fully connected layer."""

    family = "abc"
