"""Phase 4 (build), before the layout: a quantizer left on the fp32 path (its layer is not bit-serial) as
elementwise arithmetic on the threshold tests c_t = float(x >= T_t), t = 0 .. N-1:

    y = sum_k (c_{k-1} - c_k) * L_k        (c_{-1} = 1, c_N = 0: the one-hot of the level x reaches)

instead of the canonical chain's count over a new last axis and lookup (patvm.compiler.importer). Exact:
the thresholds are strictly increasing, so exactly one difference is 1, the others 0 (NaN passes no
threshold: L_0), and the sum of one level and zeros is that level (levels with a -0.0 keep the chain,
whose zero sign a sum could lose). Elementwise with per-channel constants, it follows the blocked layout
of the fp32 layers around it and fuses into the producer's epilogue; the chain made a kernel of its own
between two layout transforms. (relax.where would be one select per threshold, but ConvertLayout has no
layout rule for it.) Quantizers with many levels (8-bit) keep the chain: 5 N operations per value would
cost more than the lookup.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from patvm.compiler.match import MAX_ACTIVATION_PLANES, const_value, quantizer_pattern, rewrite_functions


@tvm.transform.module_pass(opt_level=0, name="patvm.QuantizersAsElementwise")
def quantizers_as_elementwise(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    pattern, captures = quantizer_pattern()

    def rewrite(expr, matches):
        thresholds = const_value(matches[captures["thresholds"]]).astype(np.float32)
        levels = const_value(matches[captures["levels"]]).astype(np.float32)
        count = thresholds.shape[-1]
        negative_zero = np.any((levels == 0) & np.signbit(levels))
        if count > MAX_ACTIVATION_PLANES or negative_zero or not np.all(np.diff(thresholds, axis=-1) > 0):
            return expr
        x = matches[captures["x"]]
        passed = [relax.op.astype(relax.op.greater_equal(x, relax.const(thresholds[..., t])), "float32")
                  for t in range(count)]
        one = relax.const(np.float32(1))
        y = None
        for k in range(count + 1):
            below = one if k == 0 else passed[k - 1]
            onehot = relax.op.subtract(below, passed[k]) if k < count else below
            term = relax.op.multiply(onehot, relax.const(levels[..., k]))
            y = term if y is None else relax.op.add(y, term)
        return y

    return rewrite_functions(mod, pattern, rewrite)
