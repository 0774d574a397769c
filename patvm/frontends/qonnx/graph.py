"""The QONNX graph under rewriting (`Graph`: nodes, initializers, inferred shapes, new constants) and the
parameters of its quantizer nodes read into patvm.frontends.qonnx.arithmetic ops; shared by the rewrites
(rewrite.py) and the QCDQ pairs (qcdq.py)."""
from __future__ import annotations

from functools import partial

import numpy as np
import onnx
from onnx import helper, numpy_helper

from patvm.errors import ModelError, first_line
from patvm.frontends.qonnx import arithmetic as ar
from patvm.onnx_format import paquantize

F32 = np.float32
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
QUANT_OPS = ("Quant", "IntQuant")
SUPPORTED = QUANT_OPS + ("BipolarQuant", "MultiThreshold", "Trunc")
COMMUTING = ("MaxPool", "Reshape", "Flatten")


def is_qonnx(model: onnx.ModelProto) -> bool:
    return any(n.domain in QONNX_DOMAINS for n in model.graph.node)


def _name(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node '{(node.name or node.output[0])[:120]}'"


def node_error(node: onnx.NodeProto, problem: str) -> ModelError:
    return ModelError(f"{_name(node)}: {problem}")


class Graph:
    """Nodes, constants and ranks of the model being rewritten."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        for node in model.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
                self.consts[node.output[0]] = _constant_value(node)
            else:
                self.nodes.append(node)
        self.new_inits: dict[str, np.ndarray] = {}
        self.shapes = _shapes(model)

    def const(self, node: onnx.NodeProto, index: int, role: str) -> np.ndarray:
        if index >= len(node.input) or not node.input[index]:
            raise node_error(node, f"has no {role} input")
        name = node.input[index]
        if name not in self.consts:
            raise node_error(node, f"{role} '{name[:80]}' is not a constant "
                                   "(patvm needs constant quantizer parameters)")
        return self.consts[name]

    def add_const(self, name: str, value: np.ndarray) -> str:
        self.consts[name] = value
        self.new_inits[name] = value
        return name


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    value = helper.get_attribute_value(attr)
    if attr.name in ("value_float", "value_floats"):
        return np.asarray(value, np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.asarray(value, np.int64)
    raise ModelError(f"Constant node '{node.name}': attribute '{attr.name}' is not supported")


def _shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Static shapes by tensor name, from ONNX shape inference on a copy whose QONNX ops are Identity
    (every one of them keeps its input's shape)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for node in probe.graph.node:
        if node.domain in QONNX_DOMAINS:
            x = node.input[0]
            del node.input[:]
            node.input.append(x)
            del node.attribute[:]
            node.op_type, node.domain = "Identity", ""
    del probe.opset_import[:]
    probe.opset_import.extend([o for o in model.opset_import if o.domain not in QONNX_DOMAINS])
    try:
        inferred = onnx.shape_inference.infer_shapes(probe)
    except Exception as exc:  # onnx raises several types; all mean "cannot infer"
        raise ModelError(f"ONNX shape inference failed on the QONNX model: {first_line(exc, 200)}") from exc
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return shapes


# ------------------------------------------------------------------------------------- parameters
def _channel_vector(node, params: dict[str, np.ndarray], rank: int | None, axis: int
                    ) -> tuple[dict[str, np.ndarray], int]:
    """Quantizer parameters as [C] vectors (C = 1 per tensor, their dtypes kept) for channels on `axis`."""
    shape = np.broadcast_shapes(*(np.shape(v) for v in params.values()))
    if int(np.prod(shape)) == 1:
        return {k: np.asarray(v).reshape(()) for k, v in params.items()}, 1
    if rank is None:
        raise node_error(node, "per-channel parameters on an input of unknown rank")
    if len(shape) > rank:
        raise node_error(node, f"parameter shape {list(shape)} has more axes than its input (rank {rank})")
    full = (1,) * (rank - len(shape)) + tuple(shape)
    if any(d != 1 for i, d in enumerate(full) if i != axis):
        raise node_error(node, f"parameters of shape {list(shape)} vary along an axis other than the channel "
                               f"axis {axis}")
    channels = full[axis]
    vectors = {}
    for key, value in params.items():
        value = np.asarray(value)
        if value.size == 1:
            vectors[key] = value.reshape(())
        else:
            padded = value.reshape((1,) * (rank - value.ndim) + value.shape)
            vectors[key] = np.ascontiguousarray(np.broadcast_to(padded, full)).reshape(channels)
    return vectors, channels


def node_attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _flag(node, name, default) -> bool:
    value = node_attr(node, name, default)
    if value not in (0, 1):
        raise node_error(node, f"attribute {name}={value!r} must be 0 or 1")
    return bool(value)


def _rounding(node, default="ROUND") -> str:
    mode = str(node_attr(node, "rounding_mode", default)).upper()
    if mode not in ar.ROUNDING:
        raise node_error(node, f"rounding_mode '{mode[:40]}' is not implemented (patvm takes {', '.join(ar.ROUNDING)})")
    return mode


def _bits(node, value: np.ndarray, role: str = "bit width") -> int:
    if np.size(value) != 1 or not np.isfinite(value).all() or float(np.ravel(value)[0]) != int(np.ravel(value)[0]):
        raise node_error(node, f"{role} must be one integer, got {np.ravel(value)[:4].tolist()}")
    bits = int(np.ravel(value)[0])
    if not 1 <= bits <= 32:
        raise node_error(node, f"{role} {bits} is outside 1..32")
    return bits


def _check_scale(node, scale: np.ndarray, role: str = "scale") -> None:
    if not np.issubdtype(np.asarray(scale).dtype, np.floating):
        raise node_error(node, f"{role} must be a float tensor, got {np.asarray(scale).dtype}")
    if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise node_error(node, f"{role} must be finite and > 0")


def quantizer_op(node: onnx.NodeProto, graph: Graph, as_vectors: bool, rank: int | None = None):
    """(op of patvm.frontends.qonnx.arithmetic, channel count, channel-shaped parameters or None)."""
    kind = node.op_type
    if kind in QUANT_OPS:
        params = {"scale": graph.const(node, 1, "scale"), "zero_point": graph.const(node, 2, "zero point")}
        bits = _bits(node, graph.const(node, 3, "bit width"))
        signed, narrow = _flag(node, "signed", 1), _flag(node, "narrow", 0)
        if not signed and narrow and bits == 1:
            raise node_error(node, "unsigned narrow 1-bit quantizer has a single level (signed/narrow inconsistent)")
        _check_scale(node, params["scale"])
        if not np.all(np.isfinite(params["zero_point"])):
            raise node_error(node, "zero point must be finite")
        rounding = _rounding(node)
        make = partial(ar.IntQuant, bits=bits, signed=signed, narrow=narrow, rounding=rounding)
    elif kind == "BipolarQuant":
        params = {"scale": graph.const(node, 1, "scale")}
        _check_scale(node, params["scale"])
        make = ar.BipolarQuant
    elif kind == "Trunc":
        if len(node.input) != 6:
            raise node_error(node, f"Trunc with {len(node.input)} inputs (version 1) is not supported; patvm takes "
                              "version 2 (x, scale, zero_point, input_bit_width, output_scale, output_bit_width)")
        params = {"scale": graph.const(node, 1, "scale"), "zero_point": graph.const(node, 2, "zero point"),
                  "output_scale": graph.const(node, 4, "output scale")}
        graph.const(node, 3, "input bit width")
        bits = _bits(node, graph.const(node, 5, "output bit width"), "output bit width")
        _check_scale(node, params["scale"])
        _check_scale(node, params["output_scale"], "output scale")
        signed, narrow = _flag(node, "signed", 1), _flag(node, "narrow", 0)
        if not signed and narrow and bits == 1:
            raise node_error(node, "unsigned narrow 1-bit output has a single level (signed/narrow inconsistent)")
        rounding = _rounding(node, "FLOOR")
        make = partial(ar.Trunc, output_bits=bits, signed=signed, narrow=narrow, rounding=rounding)
    else:
        raise node_error(node, f"QONNX op '{kind}' is not supported (patvm takes {', '.join(SUPPORTED)})")
    if not as_vectors:
        return make(**params), 1, None
    vectors, channels = _channel_vector(node, params, rank, 1)
    return make(**vectors), channels, vectors


def quantize_with_tables(graph: Graph, node: onnx.NodeProto, x: str, out: str, thr: np.ndarray, lv: np.ndarray
                ) -> onnx.NodeProto:
    if thr.shape[0] == 1:
        thr, lv = thr[0], lv[0]
    t = graph.add_const(f"{out}__thresholds", np.ascontiguousarray(thr, np.float32))
    v = graph.add_const(f"{out}__levels", np.ascontiguousarray(lv, np.float32))
    return paquantize.paquantize_node(x, t, v, out, name=node.name or out)
