"""Legalisations that keep NaN the way ONNX and onnxruntime do, where TVM's own would drop it.

TVM legalises Relu to max(x, 0) and MaxPool to a max-reduction; LLVM's maxnum then turns NaN into a number.
That matters for PA models: a NaN must reach a quantizer as NaN to give levels[0] (the format's rule).
- Relu keeps NaN: select(x < 0, 0, x), one elementwise op, so it still fuses into a conv's epilogue.
- MaxPool gives NaN for a window holding a NaN (IEEE 754-2019 `maximum`, as numpy and torch pool). ONNX
  leaves this unspecified; TVM's reduction and onnxruntime's MaxPool both answer by the NaN's position in
  the window (tests/reliability/test_regressions.py), so patvm pools a NaN mask beside the values.
Used by `patvm.compiler.build.prepare_passes`, so the fp32 path and tuning tasks get the same semantics.
"""
from __future__ import annotations

import tvm
from tvm import te, topi
from tvm.relax import BlockBuilder, Call, Expr


def nan_keeping_relu(x: te.Tensor) -> te.Tensor:
    zero = tvm.tirx.const(0.0, x.dtype)
    return te.compute(x.shape, lambda *i: tvm.tirx.Select(x(*i) < zero, zero, x(*i)), name="relu", tag="elemwise")


def nan_propagating_max_pool2d(x: te.Tensor, **pool) -> te.Tensor:
    pooled = topi.nn.pool2d(x, pool_type="max", **pool)
    one, zero = tvm.tirx.const(1.0, x.dtype), tvm.tirx.const(0.0, x.dtype)
    is_nan = te.compute(x.shape, lambda *i: tvm.tirx.Select(tvm.tirx.isnan(x(*i)), one, zero), name="is_nan")
    nan_window = topi.nn.pool2d(is_nan, pool_type="max", **pool)
    nan = tvm.tirx.const(float("nan"), x.dtype)
    return te.compute(pooled.shape, lambda *i: tvm.tirx.Select(nan_window(*i) > zero, nan, pooled(*i)),
                      name="max_pool2d_nan")


def _relu(bb: BlockBuilder, call: Call) -> Expr:
    return bb.call_te(nan_keeping_relu, call.args[0], primfunc_name_hint="relu")


def _max_pool2d(bb: BlockBuilder, call: Call) -> Expr:
    attrs = call.attrs
    if attrs.out_layout != attrs.layout:
        return call  # TVM's own legaliser refuses this too; the build then names the op
    return bb.call_te(nan_propagating_max_pool2d, call.args[0], kernel=attrs.pool_size, stride=attrs.strides,
                      dilation=attrs.dilation, padding=attrs.padding, ceil_mode=attrs.ceil_mode,
                      layout=attrs.layout, primfunc_name_hint="max_pool2d")


NAN_KEEPING_LEGALIZATIONS = {"relax.nn.relu": _relu, "relax.nn.max_pool2d": _max_pool2d}
