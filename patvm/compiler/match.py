"""Phase 2, match: the pattern table of PA binary layers, in the style of tvm/relax/backend/cuda/cublas.py.

Each entry is (name, pattern, check). A pattern finds "quantizer -> layer with a constant weight"; the
check decides whether the bit-serial kernel computes that layer exactly and returns None, or returns the
reason it stays on TVM's fp32 path (recorded in the report; never an error, never a wrong result).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, rewrite_call, wildcard

from patvm.approx.planes import MAX_WEIGHT_VALUES
from patvm.approx.staircase import Staircase


def const_value(expr: relax.Expr) -> np.ndarray:
    # relax constants are tvm.ir.GenericConst in 0.27; the payload is `.value`
    return expr.value.numpy() if hasattr(expr, "value") else expr.data.numpy()


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    shape = getattr(expr.ty, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        return None


def rewrite_functions(mod: tvm.IRModule, pattern: DFPattern, rewriter) -> tvm.IRModule:
    """Every Relax function of `mod` with each match of `pattern` replaced by rewriter(expr, matches)."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gv] = rewrite_call(pattern, rewriter, func)
    return mod


def quantizer_pattern() -> tuple[DFPattern, dict[str, DFPattern]]:
    """The Relax form of the canonical PAQuantize chain (patvm.compiler.importer)."""
    x, thresholds, index, levels, zero = wildcard(), is_const(), is_const(), is_const(), is_const()
    ge = is_op("relax.greater_equal")(is_op("relax.expand_dims")(x), thresholds)
    k = is_op("relax.sum")(is_op("relax.astype")(ge))
    y = is_op("relax.sum")(is_op("relax.where")(is_op("relax.equal")(k, index), levels, zero))
    return y, {"x": x, "thresholds": thresholds, "levels": levels}


@dataclass
class LayerMatch:
    """One binary-layer candidate found by the pattern table."""

    kind: str                       # "conv2d" or "dense"
    call: relax.Call                # the conv2d / matmul call
    quantized: relax.Expr           # the quantizer's output (shared by every layer it feeds)
    x: relax.Expr                   # the quantizer's input (the variable bound to it, where there is one)
    staircase: Staircase
    weight: np.ndarray              # conv: [O, C, KH, KW]; dense: [O, C, 1, 1] (W_bar)
    stride: int = 1
    pad: int = 0
    reason: str | None = None       # why it stays fp32, None when bit-serial


def _staircase_from(captures) -> Staircase:
    thr = const_value(captures["thresholds"]).astype(np.float32)
    lv = const_value(captures["levels"]).astype(np.float32)
    if thr.ndim > 1:  # per channel, stored broadcastable as [1, C, 1, .., 1, N]
        thr, lv = thr.reshape(-1, thr.shape[-1]), lv.reshape(-1, lv.shape[-1])
    return Staircase(thr, lv)


MAX_ACTIVATION_PLANES = 16


def check_staircase(stair: Staircase) -> str | None:
    if stair.N > MAX_ACTIVATION_PLANES:
        return (f"{stair.N + 1} activation levels (> {MAX_ACTIVATION_PLANES + 1}): too many planes for bit-serial "
                "(an 8-bit quantizer has 256)")
    steps = stair.thermometer_deltas()
    if stair.per_channel and not np.all(steps == steps[:1]):
        return "per-channel level steps differ between channels (only thresholds and the bottom level may)"
    return None


def check_weight(weight: np.ndarray) -> str | None:
    count = len(np.unique(weight))
    if count > MAX_WEIGHT_VALUES:
        return f"{count} distinct weight values (> {MAX_WEIGHT_VALUES})"
    if not np.all(np.isfinite(weight)):
        return "weights contain NaN or infinity"
    return None


def check_conv2d_and_set_geometry(match: LayerMatch) -> str | None:
    """Why the conv stays fp32, or None; on the way sets `match.stride` and `match.pad` (once they are known
    to be one stride and one symmetric pad)."""
    attrs = match.call.attrs
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return f"layout {attrs.data_layout}/{attrs.kernel_layout}"
    if int(attrs.groups) != 1:
        return f"grouped conv (groups={int(attrs.groups)})"
    if any(int(d) != 1 for d in attrs.dilation):
        return "dilated conv"
    strides = {int(s) for s in attrs.strides}
    pads = {int(p) for p in attrs.padding}
    if len(strides) != 1 or len(pads) != 1:
        return "unequal strides or asymmetric padding"
    if match.weight.shape[2] != match.weight.shape[3]:
        return "non-square kernel"
    if static_shape(match.x) is None or len(static_shape(match.x)) != 4:
        return "dynamic or non-4D input shape"
    match.stride, match.pad = strides.pop(), pads.pop()
    return check_staircase(match.staircase) or check_weight(match.weight)


def check_dense(match: LayerMatch) -> str | None:
    shape = static_shape(match.x)
    if shape is None or len(shape) != 2:
        return "matmul input is not a static 2-D tensor"
    return check_staircase(match.staircase) or check_weight(match.weight)


def conv2d_pattern():
    q, captures = quantizer_pattern()
    return is_op("relax.nn.conv2d")(q, is_const()), captures, q


def dense_pattern():
    q, captures = quantizer_pattern()
    return is_op("relax.matmul")(q, is_const()), captures, q


def _conv_weight(call: relax.Call) -> np.ndarray:
    return const_value(call.args[1]).astype(np.float32)


def _dense_weight(call: relax.Call) -> np.ndarray:
    w = const_value(call.args[1]).astype(np.float32)           # [C, O]
    return np.ascontiguousarray(w.T)[:, :, None, None] if w.ndim == 2 else w


# The pattern table: name -> (pattern factory, weight extractor, check). One place registers them all.
PATTERN_TABLE: dict[str, tuple[Callable, Callable, Callable]] = {
    "conv2d": (conv2d_pattern, _conv_weight, check_conv2d_and_set_geometry),
    "dense": (dense_pattern, _dense_weight, check_dense),
}


def bound_variable(expr: relax.Expr, var2val: dict) -> relax.Expr:
    """The variable bound to `expr`, else `expr`. The pattern match resolves variables to their values, and
    a value (a MaxPool, a ReLU) used again in the rewritten module would be computed a second time."""
    if not isinstance(expr, relax.Var):
        for var, value in var2val.items():
            if value.same_as(expr):
                return var
    return expr


def match_layer(call: relax.Call, var2val: dict) -> LayerMatch | None:
    """The table entry matching `call` with its check applied, or None when no entry matches."""
    for kind, (make_pattern, weight_of, check) in PATTERN_TABLE.items():
        pattern, captures, q = make_pattern()
        matched = pattern.extract_matched_expr(call, var2val)
        if matched is None:
            continue
        m = LayerMatch(kind=kind, call=call, quantized=call.args[0], x=bound_variable(matched[captures["x"]], var2val),
                       staircase=_staircase_from({k: matched[v] for k, v in captures.items()}),
                       weight=weight_of(call))
        m.reason = check(m)
        return m
    return None
