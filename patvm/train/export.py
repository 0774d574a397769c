"""Export a trained model to PA-ONNX by walking its module tree with `patvm.onnx_format.GraphWriter`.

Everything is standard ONNX (opset 17) except the activation quantizers, each one
`ai.patvm.PAQuantize(X, thresholds, levels)` node with the float32 tables its forward selects from
(levels[0] = 0 for PA, ABC-Net's bottom level -sum(beta) for ABC). A quantized layer's kernel is written
as its approximated W_bar (PA eq. 6 / ABC-Net eq. 2-5), exactly the tensor the torch forward uses.

Supported: nn.Sequential (nested), Conv2d, Linear, BatchNorm2d (running statistics), ReLU, MaxPool2d,
AvgPool2d, AdaptiveAvgPool2d(1), Flatten(1), Identity, Dropout (inference: identity), the quantized layers
of `patvm.train.layers` and standalone activation quantizers. Anything else raises a PatvmError naming
the module, so an export never silently differs from the model.

The walk, not torch.onnx, is the exporter: the output is the GraphWriter's form by construction and
passes `onnx.checker.check_model(full_check=True)` (run by `GraphWriter.model`).
"""
from __future__ import annotations

import os

import onnx
import torch
from torch import nn

from patvm.errors import PatvmError, require
from patvm.onnx_format import GraphWriter, save_model
from patvm.train.quantizers import StaircaseQuantizer


def _pair_value(value, what: str, module: nn.Module) -> int:
    """A square hyper-parameter (int or equal pair) as one int; the writer takes symmetric ones only."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    require(len(pair) == 2 and pair[0] == pair[1], f"cannot export {module}: {what} {value} is not square")
    return int(pair[0])


def _array(tensor: torch.Tensor | None):
    return None if tensor is None else tensor.detach().cpu().float().numpy()


def _quantize_input(writer: GraphWriter, x: str, quantizer: StaircaseQuantizer | None) -> str:
    return x if quantizer is None else writer.pa_quantize(x, quantizer.staircase())


def _kernel(layer: nn.Module):
    quantizer = getattr(layer, "kernel_quantizer", None)
    return _array(layer.weight) if quantizer is None else quantizer.quantized_weight(layer.weight)


def _conv(writer: GraphWriter, x: str, conv: nn.Conv2d) -> str:
    require(conv.padding_mode == "zeros" and not isinstance(conv.padding, str),
            f"cannot export {conv}: only explicit zero padding")
    x = _quantize_input(writer, x, getattr(conv, "input_quantizer", None))
    return writer.conv(x, _kernel(conv), _array(conv.bias), stride=_pair_value(conv.stride, "stride", conv),
                       pad=_pair_value(conv.padding, "padding", conv), group=conv.groups,
                       dilation=_pair_value(conv.dilation, "dilation", conv))


def _linear(writer: GraphWriter, x: str, linear: nn.Linear) -> str:
    x = _quantize_input(writer, x, getattr(linear, "input_quantizer", None))
    return writer.gemm(x, _kernel(linear), _array(linear.bias))


def _batchnorm(writer: GraphWriter, x: str, bn: nn.BatchNorm2d) -> str:
    require(bn.track_running_stats and bn.running_mean is not None,
            f"cannot export {bn}: inference needs running statistics")
    ones = torch.ones_like(bn.running_mean)
    scale = bn.weight if bn.affine else ones
    bias = bn.bias if bn.affine else torch.zeros_like(ones)
    return writer.batchnorm(x, _array(scale), _array(bias), _array(bn.running_mean), _array(bn.running_var), bn.eps)


def _maxpool(writer: GraphWriter, x: str, pool: nn.MaxPool2d) -> str:
    require(not pool.ceil_mode and _pair_value(pool.dilation, "dilation", pool) == 1,
            f"cannot export {pool}: ceil_mode and dilation are not supported")
    stride = pool.kernel_size if pool.stride is None else pool.stride
    return writer.maxpool(x, _pair_value(pool.kernel_size, "kernel", pool), _pair_value(stride, "stride", pool),
                          _pair_value(pool.padding, "padding", pool))


def _avgpool(writer: GraphWriter, x: str, pool: nn.AvgPool2d) -> str:
    require(not pool.ceil_mode and pool.divisor_override is None,
            f"cannot export {pool}: ceil_mode and divisor_override are not supported")
    kernel = _pair_value(pool.kernel_size, "kernel", pool)
    stride = _pair_value(kernel if pool.stride is None else pool.stride, "stride", pool)
    pad = _pair_value(pool.padding, "padding", pool)
    return writer.node("AveragePool", [x], "avgpool", kernel_shape=[kernel, kernel], strides=[stride, stride],
                       pads=[pad] * 4, count_include_pad=int(pool.count_include_pad))


def _adaptive_avgpool(writer: GraphWriter, x: str, pool: nn.AdaptiveAvgPool2d) -> str:
    size = pool.output_size
    require(size == 1 or tuple(size) == (1, 1), f"cannot export {pool}: only output size 1 (global pooling)")
    return writer.global_avgpool(x)


def _flatten(writer: GraphWriter, x: str, flatten: nn.Flatten) -> str:
    require(flatten.start_dim == 1 and flatten.end_dim == -1, f"cannot export {flatten}: only Flatten(1, -1)")
    return writer.flatten(x)


def _sequential(writer: GraphWriter, x: str, seq: nn.Sequential) -> str:
    for child in seq:
        x = emit(writer, x, child)
    return x


# isinstance order matters: the quantized layers are Conv2d / Linear subclasses and share their emitters
EMITTERS = (
    (nn.Sequential, _sequential),
    (StaircaseQuantizer, lambda w, x, q: w.pa_quantize(x, q.staircase())),
    (nn.Conv2d, _conv),
    (nn.Linear, _linear),
    (nn.BatchNorm2d, _batchnorm),
    (nn.ReLU, lambda w, x, m: w.relu(x)),
    (nn.MaxPool2d, _maxpool),
    (nn.AvgPool2d, _avgpool),
    (nn.AdaptiveAvgPool2d, _adaptive_avgpool),
    (nn.Flatten, _flatten),
    ((nn.Identity, nn.Dropout), lambda w, x, m: x),
)


def emit(writer: GraphWriter, x: str, module: nn.Module) -> str:
    """Append `module`'s inference graph to `writer` on input `x`; returns the output name."""
    for kind, emitter in EMITTERS:
        if isinstance(module, kind):
            return emitter(writer, x, module)
    raise PatvmError(f"cannot export a {type(module).__name__}: supported are nn.Sequential of "
                     "Conv2d, Linear, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, "
                     "the patvm.train quantized layers and activation quantizers")


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike | None = None,
                input_name: str = "input", name: str = "patvm_train") -> onnx.ModelProto:
    """Write `model` (in inference mode) as PA-ONNX; returns the checked ModelProto (saved atomically
    to `path` when given). The batch dimension is symbolic; the rest comes from `example_input`."""
    require(isinstance(example_input, torch.Tensor) and example_input.dim() >= 2,
            "example_input must be a tensor with a batch dimension")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out_shape = list(model(example_input).shape)
        writer = GraphWriter(name)
        x = writer.input(input_name, ["batch", *example_input.shape[1:]])
        writer.output(emit(writer, x, model), ["batch", *out_shape[1:]])
        onnx_model = writer.model(check=True)
    finally:
        model.train(was_training)
    if path is not None:
        save_model(onnx_model, path)
    return onnx_model


__all__ = ["emit", "export_onnx"]
