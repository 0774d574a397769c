"""Phase 4 (build), before the layout: a BatchNorm right after an fp32 conv2d folds into it (weights w * s,
then + b - m s, s = gamma / sqrt(var + eps)), as onnxruntime folds Conv+BatchNormalization. The kernel's
epilogue is then one add instead of a subtract, a divide (a slow instruction) and a multiply-add per output
vector.

TVM's FoldBatchnormToConv2D asks for constant weights; here the weights may be any expression, such as
the expansion of weight codes (patvm.compiler.weight_codes), whose scaling then runs at load time with the
expansion (LiftTransformParams). Bit-serial convs are patvm's own ops by now, so only fp32 convs fold.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, wildcard

from patvm.compiler.match import const_value, rewrite_functions


def _constant(expr) -> np.ndarray:
    return const_value(expr).astype(np.float64)


@tvm.transform.module_pass(opt_level=0, name="patvm.FoldBatchnormIntoConv2d")
def fold_batchnorm_into_conv2d(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    data, weight = wildcard(), wildcard()
    conv = is_op("relax.nn.conv2d")(data, weight)
    gamma, beta, mean, var = is_const(), is_const(), is_const(), is_const()
    batch_norm = is_op("relax.nn.batch_norm")(conv, gamma, beta, mean, var)
    norm = TupleGetItemPattern(batch_norm, 0)

    def rewrite(expr, matches):
        call, attrs = matches[conv], matches[conv].attrs
        bn = matches[batch_norm].attrs
        plain = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NCHW", "OIHW", "NCHW")
        if not plain or int(bn.axis) != 1 or call.ty.dtype != "float32":
            return expr
        scale = _constant(matches[gamma]) / np.sqrt(_constant(matches[var]) + float(bn.epsilon))
        shift = _constant(matches[beta]) - _constant(matches[mean]) * scale
        out = scale.size
        w = relax.op.multiply(matches[weight], relax.const(scale.reshape(out, 1, 1, 1).astype(np.float32)))
        y = relax.Call(call.op, [matches[data], w], attrs)
        return relax.op.add(y, relax.const(shift.reshape(1, out, 1, 1).astype(np.float32)))

    return rewrite_functions(mod, norm, rewrite)
