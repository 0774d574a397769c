"""QuantizeLinear -> DequantizeLinear pairs narrow enough (at most QCDQ_MAX_LEVELS levels) to be a
PAQuantize staircase or an integer weight: the low-bit QCDQ form Brevitas exports (patvm.frontends.qonnx)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from patvm.frontends.qonnx import arithmetic as ar
from patvm.frontends.qonnx.graph import Graph, _check_scale, node_attr, node_error, quantize_with_tables

QCDQ_MAX_LEVELS = 17      # wider QuantizeLinear -> DequantizeLinear pairs (int8 QDQ) stay as they are


def _along(value: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A per-axis (1-D) QDQ parameter shaped to broadcast along `axis` of a rank-`rank` tensor."""
    value = np.asarray(value)
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    shape = [1] * rank
    shape[axis % rank] = value.size
    return value.reshape(shape)


def _int_range(dtype) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def dequantize_pair(graph: Graph, node: onnx.NodeProto, producers: dict):
    """A DequantizeLinear ending a QCDQ chain: ("weight", folded, (integer, scale) or None),
    ("activation", PAQuantize node), or None (left as it is)."""
    if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    out_scale = graph.consts.get(node.input[1])
    out_zero = graph.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if out_scale is None or (len(node.input) > 2 and node.input[2] and out_zero is None):
        return None
    if not np.issubdtype(np.asarray(out_scale).dtype, np.floating) or not np.all(out_scale > 0):
        return None
    src, clip = node.input[0], producers.get(node.input[0])
    dtype = out_zero.dtype if out_zero is not None else graph.consts.get(src, np.zeros((), np.uint8)).dtype
    if not np.issubdtype(dtype, np.integer):
        return None
    out_zero = out_zero if out_zero is not None else np.zeros((), dtype)
    lo, hi = _int_range(dtype)
    if clip is not None and clip.op_type == "Clip" and clip.domain in ("", "ai.onnx"):
        bounds = [graph.consts.get(i) if i else None for i in list(clip.input[1:3]) + [""] * (3 - len(clip.input))]
        if any(i and b is None for i, b in zip(clip.input[1:3], bounds)):
            return None
        if any(
            b is not None and (np.size(b) != 1 or not np.issubdtype(np.asarray(b).dtype, np.integer))
            for b in bounds
        ):
            return None
        lo = max(lo, int(np.asarray(bounds[0]).reshape(()))) if bounds[0] is not None else lo
        hi = min(hi, int(np.asarray(bounds[1]).reshape(()))) if bounds[1] is not None else hi
        src = clip.input[0]
    axis = int(node_attr(node, "axis", 1))
    if src in graph.consts:                                    # a weight stored as integers
        w = np.asarray(graph.consts[src])
        if not np.issubdtype(w.dtype, np.integer):
            return None
        integer = (
            np.clip(w.astype(np.int64), lo, hi) - _along(out_zero, w.ndim, axis).astype(np.int64)
        ).astype(np.float32)
        folded = (integer * _along(out_scale, w.ndim, axis)).astype(np.float32)
        per_row = (np.size(out_scale) > 1 and axis % w.ndim == 0 and np.size(out_zero) == 1
                   and len(np.unique(out_scale)) > 1)
        return "weight", folded, ((integer, np.asarray(out_scale, np.float32).reshape(-1)) if per_row else None)
    quant = producers.get(src)
    if (
        quant is None
        or quant.op_type != "QuantizeLinear"
        or quant.domain not in ("", "ai.onnx")
        or hi - lo + 1 > QCDQ_MAX_LEVELS
    ):
        return None
    scale = graph.consts.get(quant.input[1])
    zero = graph.consts.get(quant.input[2]) if len(quant.input) > 2 and quant.input[2] else np.zeros((), dtype)
    if scale is None or zero is None or zero.dtype != dtype or int(node_attr(quant, "axis", 1)) != axis:
        return None
    _check_scale(quant, scale)
    params = {"scale": scale, "zero_point": zero, "out_scale": out_scale, "out_zero_point": out_zero}
    if any(np.size(v) > 1 for v in params.values()) and axis != 1:
        return None
    channels = max(np.size(v) for v in params.values())
    vectors = {
        k: (np.asarray(v).reshape(-1) if np.size(v) > 1 else np.asarray(v).reshape(()))
        for k, v in params.items()
    }
    op = ar.LinearQuant(
        vectors["scale"], vectors["zero_point"], lo, hi, vectors["out_scale"], vectors["out_zero_point"]
    )
    try:
        thr, lv = ar.staircase_of(op, channels)
    except ValueError as exc:
        raise node_error(node, str(exc)) from None
    if not ar.check_staircase(op, thr, lv):
        raise node_error(node, "internal error: the staircase does not reproduce QuantizeLinear -> DequantizeLinear")
    return "activation", quantize_with_tables(graph, node, quant.input[0], node.output[0], thr, lv)


def has_low_bit_qcdq(model: onnx.ModelProto) -> bool:
    """Does the model hold a QuantizeLinear [-> Clip] -> DequantizeLinear chain of at most 17 levels (the
    standard-ONNX form of a low-bit quantizer, Brevitas' export_onnx_qcdq)?"""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx") or not node.input:
            continue
        clip = producers.get(node.input[0])
        if clip is not None and clip.op_type == "Clip" and len(clip.input) == 3:
            bounds = [inits.get(i) or _constant_of(producers.get(i)) for i in clip.input[1:3]]
            if all(b is not None for b in bounds):
                values = [numpy_helper.to_array(b) for b in bounds]
                if all(v.size == 1 and np.issubdtype(v.dtype, np.integer) for v in values):
                    lo, hi = (int(v.reshape(())) for v in values)
                    if hi - lo + 1 <= QCDQ_MAX_LEVELS:
                        return True
    return False


def _constant_of(node):
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return node.attribute[0].t
    return None
