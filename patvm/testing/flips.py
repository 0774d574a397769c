"""The flip classifier: is a float graph's difference from onnxruntime one threshold flip caused by fp32
rounding (the only difference float mode tolerates)?"""
from __future__ import annotations

import numpy as np
import onnx

from patvm.testing.cases import FuzzCase
from patvm.testing.oracle import compare, onnxruntime_outputs

FLIP_INPUT_TOLERANCE = 1e-4   # of the quantizer input's range: fp32 summation-order rounding, nothing more


def with_outputs(model: onnx.ModelProto, outputs: list[str], shapes: dict) -> onnx.ModelProto:
    """`model` with `outputs` (intermediate tensors, shapes from `shapes` where known) as its outputs."""
    from onnx import TensorProto, helper
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes.get(n)) for n in outputs)
    return probe


def fed_at(model: onnx.ModelProto, name: str, shape: list[int]) -> onnx.ModelProto:
    """`model` with tensor `name` fed as a graph input instead of computed by its node."""
    from onnx import TensorProto, helper
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    kept = [n for n in cut.graph.node if name not in n.output]
    del cut.graph.node[:]
    cut.graph.node.extend(kept)
    cut.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    return cut


def rounding_flip(case: FuzzCase, got: list[np.ndarray], target: str = "host") -> str | None:
    """Float mode: is the difference `got` vs onnxruntime one threshold flip? It is when the first quantizer
    whose output differs got inputs that agree up to fp32 rounding (FLIP_INPUT_TOLERANCE), patvm's levels
    are exactly the reference quantizer applied to patvm's own input, and onnxruntime fed with patvm's
    levels there gives patvm's outputs (within the float bar: the layers after the flip are checked too).
    Returns a description of the flip, else None."""
    import patvm
    from patvm.compiler.importer import quantizer_staircase
    from patvm.onnx_format import paquantize
    model = case.model
    quantizers = [n for n in model.graph.node if paquantize.is_paquantize(n)]
    if not quantizers:
        return None
    names = [name for n in quantizers for name in (n.input[0], n.output[0])]
    values = dict(zip(names, onnxruntime_outputs(with_outputs(model, names, {}), case.inputs)))
    initializers = {t.name: t for t in model.graph.initializer}
    for node in quantizers:
        x_name, q_name = node.input[0], node.output[0]
        probe = with_outputs(model, [x_name, q_name], {n: list(values[n].shape) for n in (x_name, q_name)})
        compiled = patvm.compile(probe, target=target, strategy=case.strategy)
        got_x, got_q = compiled.run([case.inputs[i["name"]] for i in compiled.inputs])
        want_x, want_q = values[x_name], values[q_name]
        off = ~((got_q == want_q) | (np.isnan(got_q) & np.isnan(want_q)))
        if not off.any():
            continue
        finite = np.isfinite(want_x)
        span = float(np.ptp(want_x[finite])) if finite.any() else 0.0
        with np.errstate(invalid="ignore"):
            input_diff = np.abs(got_x.astype(np.float64) - want_x)
        reference = quantizer_staircase(node, initializers).quantize(got_x)
        explained = (input_diff <= FLIP_INPUT_TOLERANCE * max(span, 1e-30)) & (reference == got_q)
        if not explained[off].all():
            return None
        feeds = dict(case.inputs, **{q_name: got_q})
        downstream = onnxruntime_outputs(fed_at(model, q_name, list(got_q.shape)), feeds)
        if compare(got, downstream, "float") is not None:
            return None
        return (f"threshold flip at PAQuantize '{node.name}': {int(off.sum())} of {off.size} levels, inputs within "
                f"{float(input_diff[off].max()):.3g} of onnxruntime's (range {span:.3g})")
    return None
