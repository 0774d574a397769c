"""patvm's legalisations: NaN kept the way ONNX and onnxruntime keep it, and bool -> float casts as selects.

TVM legalises Relu to max(x, 0) and MaxPool to a max-reduction; LLVM's maxnum then turns NaN into a number.
That matters for PA models: a NaN must reach a quantizer as NaN to give levels[0] (the format's rule).
- Relu keeps NaN: select(x < 0, 0, x), one elementwise op, so it still fuses into a conv's epilogue.
- MaxPool gives NaN for a window holding a NaN (IEEE 754-2019 `maximum`, as numpy and torch pool). ONNX
  leaves this unspecified; TVM's reduction and onnxruntime's MaxPool both answer by the NaN's position in
  the window (tests/reliability/test_regressions.py), so patvm's max-pool reducer keeps NaN.
- A bool cast to float is select(b, 1, 0): one masked move on AVX-512, where LLVM lowers TVM's cast (uitofp
  of an i1) through a 32-bit integer (mask to -1, shift, convert: three instructions). The fp32-path
  quantizers (patvm.compiler.elementwise_quantizers) are made of such casts, one per threshold.
Used by `patvm.compiler.build.prepare_passes`, so the fp32 path and tuning tasks get the same semantics.
"""
from __future__ import annotations

import re

import tvm
from tvm import te, topi
from tvm.ir import Op
from tvm.relax import BlockBuilder, Call, Expr

_TVM_MAX_POOL2D = Op.get("relax.nn.max_pool2d").get_attr("FLegalize")
_TVM_ASTYPE = Op.get("relax.astype").get_attr("FLegalize")
_NCHW_OR_BLOCKED = re.compile(r"^NCHW(\d+c)?$")


def nan_keeping_relu(x: te.Tensor) -> te.Tensor:
    zero = tvm.tirx.const(0.0, x.dtype)
    return te.compute(x.shape, lambda *i: tvm.tirx.Select(x(*i) < zero, zero, x(*i)), name="relu", tag="elemwise")


def nan_propagating_max_pool2d(x: te.Tensor, out_shape, kernel, stride, dilation, padding) -> te.Tensor:
    """NCHW or NCHW[b]c max pooling whose reducer keeps NaN; `out_shape` is Relax's (ceil_mode included),
    padding is (top, left, bottom, right) with -inf, widened at the bottom / right where ceil_mode's last
    window needs it."""
    (kh, kw), (sh, sw), (dh, dw) = ([int(v) for v in pair] for pair in (kernel, stride, dilation))
    top, left, bottom, right = (int(v) for v in padding)
    out_shape = [int(v) for v in out_shape]
    oh, ow = out_shape[2:4]
    h, w = (int(v) for v in x.shape[2:4])
    bottom = max(bottom, (oh - 1) * sh + dh * (kh - 1) + 1 - h - top)
    right = max(right, (ow - 1) * sw + dw * (kw - 1) + 1 - w - left)
    block = [0] * (len(x.shape) - 4)   # the channel block of NCHW[b]c is not padded
    target = tvm.target.Target.current(allow_none=True)
    llvm = target is not None and target.kind.name == "llvm"
    # -inf, not TVM's min_value (the lowest finite float): a window of -inf values gives -inf. (onnxruntime
    # gives -FLT_MAX for such a window where it covers left padding, -inf where it covers top padding.)
    padded = topi.nn.pad(x, [0, 0, top, left, *block], [0, 0, bottom, right, *block], pad_value=float("-inf"),
                         name="pool_pad")

    def keep_nan_max(a, b):
        if llvm:   # IEEE 754-2019 maximum: one vector max, compare and blend (the Select chain stays scalar)
            return tvm.tirx.call_llvm_pure_intrin(x.dtype, "llvm.maximum", a, b)
        # isnan, not a != a: TVM's simplifier folds the latter to false
        return tvm.tirx.Select(tvm.tirx.isnan(a), a, tvm.tirx.Select(tvm.tirx.isnan(b), b, tvm.tirx.max(a, b)))

    nan_max = te.comm_reducer(keep_nan_max, lambda dtype: tvm.tirx.const(float("-inf"), dtype), name="nan_max")
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    return te.compute(out_shape, lambda b, ch, i, j, *c: nan_max(
        padded[(b, ch, i * sh + rh * dh, j * sw + rw * dw, *c)], axis=[rh, rw]), name="max_pool2d")


def _relu(bb: BlockBuilder, call: Call) -> Expr:
    return bb.call_te(nan_keeping_relu, call.args[0], primfunc_name_hint="relu")


def _max_pool2d(bb: BlockBuilder, call: Call) -> Expr:
    attrs = call.attrs
    if not _NCHW_OR_BLOCKED.match(attrs.layout) or attrs.out_layout != attrs.layout or call.ty.shape is None:
        return _TVM_MAX_POOL2D(bb, call)   # ONNX models are NCHW (blocked by patvm); others keep TVM's semantics
    return bb.call_te(nan_propagating_max_pool2d, call.args[0], out_shape=call.ty.shape, kernel=attrs.pool_size,
                      stride=attrs.strides, dilation=attrs.dilation, padding=attrs.padding,
                      primfunc_name_hint="max_pool2d")


def bool_as_float(b: te.Tensor, dtype: str) -> te.Tensor:
    one, zero = tvm.tirx.const(1, dtype), tvm.tirx.const(0, dtype)
    return te.compute(b.shape, lambda *i: tvm.tirx.Select(b(*i), one, zero), name="bool_as_float", tag="elemwise")


def _astype(bb: BlockBuilder, call: Call) -> Expr:
    dtype = call.attrs.dtype
    if getattr(call.args[0].ty, "dtype", None) != "bool" or not str(dtype).startswith("float"):
        return _TVM_ASTYPE(bb, call)
    return bb.call_te(bool_as_float, call.args[0], dtype=str(dtype), primfunc_name_hint="cast")


PATVM_LEGALIZATIONS = {"relax.nn.relu": _relu, "relax.nn.max_pool2d": _max_pool2d, "relax.astype": _astype}
