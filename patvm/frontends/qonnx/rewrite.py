"""A QONNX model -> patvm's canonical form: standard ONNX with `ai.patvm.PAQuantize` activation quantizers.

  Quant / IntQuant, BipolarQuant, Trunc on a tensor  ->  PAQuantize with the op's exact staircase
                                                          (patvm.frontends.qonnx.arithmetic)
  MultiThreshold                                      ->  PAQuantize (sorted thresholds, out_scale * k + out_bias)
  Quant / BipolarQuant on an initializer (a weight)   ->  the folded float weight, as qonnx computes it;
      with a per-output-channel scale feeding a Conv, Gemm or Transpose -> MatMul, the layer takes the
      integer weight (code - zero_point, few values) and a Mul by the scale follows it, so a binary
      weight with +-s_c stays one weight plane and the scale joins the layer's epilogue
  BatchNormalization [-> Relu] -> PAQuantize         ->  one per-channel PAQuantize on the BatchNorm's input,
      thresholds exact in onnxruntime's BatchNorm arithmetic (negative BN scales: that channel times -1)
  PAQuantize -> MaxPool / Reshape / Flatten           ->  the op first, then the quantizer (a monotone
      staircase commutes with max; a per-tensor one with any reshape, a per-channel one with a flatten),
      so the quantizer meets its layer

Constant nodes and constant Transposes become initializers; initializers are no longer graph inputs. The
other float ops stay as they are (a BatchNorm before a residual add is fused into the layer's epilogue).
Anything patvm cannot reproduce exactly is a one-line ModelError naming the node.
"""
from __future__ import annotations

from collections import defaultdict

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


def _fail(node: onnx.NodeProto, problem: str) -> ModelError:
    return ModelError(f"{_name(node)}: {problem}")


class _Graph:
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
            raise _fail(node, f"has no {role} input")
        name = node.input[index]
        if name not in self.consts:
            raise _fail(node, f"{role} '{name[:80]}' is not a constant (patvm needs constant quantizer parameters)")
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
        raise _fail(node, "per-channel parameters on an input of unknown rank")
    if len(shape) > rank:
        raise _fail(node, f"parameter shape {list(shape)} has more axes than its input (rank {rank})")
    full = (1,) * (rank - len(shape)) + tuple(shape)
    if any(d != 1 for i, d in enumerate(full) if i != axis):
        raise _fail(node, f"parameters of shape {list(shape)} vary along an axis other than the channel axis {axis}")
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


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _flag(node, name, default) -> bool:
    value = _attr(node, name, default)
    if value not in (0, 1):
        raise _fail(node, f"attribute {name}={value!r} must be 0 or 1")
    return bool(value)


def _rounding(node, default="ROUND") -> str:
    mode = str(_attr(node, "rounding_mode", default)).upper()
    if mode not in ar.ROUNDING:
        raise _fail(node, f"rounding_mode '{mode[:40]}' is not implemented (patvm takes {', '.join(ar.ROUNDING)})")
    return mode


def _bits(node, value: np.ndarray, role: str = "bit width") -> int:
    if np.size(value) != 1 or not np.isfinite(value).all() or float(np.ravel(value)[0]) != int(np.ravel(value)[0]):
        raise _fail(node, f"{role} must be one integer, got {np.ravel(value)[:4].tolist()}")
    bits = int(np.ravel(value)[0])
    if not 1 <= bits <= 32:
        raise _fail(node, f"{role} {bits} is outside 1..32")
    return bits


def _check_scale(node, scale: np.ndarray, role: str = "scale") -> None:
    if not np.issubdtype(np.asarray(scale).dtype, np.floating):
        raise _fail(node, f"{role} must be a float tensor, got {np.asarray(scale).dtype}")
    if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise _fail(node, f"{role} must be finite and > 0")


def quantizer_op(node: onnx.NodeProto, graph: _Graph, as_vectors: bool, rank: int | None = None):
    """(op of patvm.frontends.qonnx.arithmetic, channel count, channel-shaped parameters or None)."""
    kind = node.op_type
    if kind in QUANT_OPS:
        params = {"scale": graph.const(node, 1, "scale"), "zero_point": graph.const(node, 2, "zero point")}
        bits = _bits(node, graph.const(node, 3, "bit width"))
        signed, narrow = _flag(node, "signed", 1), _flag(node, "narrow", 0)
        if not signed and narrow and bits == 1:
            raise _fail(node, "unsigned narrow 1-bit quantizer has a single level (signed/narrow inconsistent)")
        _check_scale(node, params["scale"])
        if not np.all(np.isfinite(params["zero_point"])):
            raise _fail(node, "zero point must be finite")
        rounding = _rounding(node)
        make = lambda p: ar.IntQuant(p["scale"], p["zero_point"], bits, signed, narrow, rounding)  # noqa: E731
    elif kind == "BipolarQuant":
        params = {"scale": graph.const(node, 1, "scale")}
        _check_scale(node, params["scale"])
        make = lambda p: ar.BipolarQuant(p["scale"])  # noqa: E731
    elif kind == "Trunc":
        if len(node.input) != 6:
            raise _fail(node, f"Trunc with {len(node.input)} inputs (version 1) is not supported; patvm takes "
                              "version 2 (x, scale, zero_point, input_bit_width, output_scale, output_bit_width)")
        params = {"scale": graph.const(node, 1, "scale"), "zero_point": graph.const(node, 2, "zero point"),
                  "output_scale": graph.const(node, 4, "output scale")}
        graph.const(node, 3, "input bit width")
        bits = _bits(node, graph.const(node, 5, "output bit width"), "output bit width")
        _check_scale(node, params["scale"])
        _check_scale(node, params["output_scale"], "output scale")
        signed, narrow = _flag(node, "signed", 1), _flag(node, "narrow", 0)
        if not signed and narrow and bits == 1:
            raise _fail(node, "unsigned narrow 1-bit output has a single level (signed/narrow inconsistent)")
        rounding = _rounding(node, "FLOOR")
        make = lambda p: ar.Trunc(p["scale"], p["zero_point"], p["output_scale"], bits, signed, narrow, rounding)  # noqa: E731
    else:
        raise _fail(node, f"QONNX op '{kind}' is not supported (patvm takes {', '.join(SUPPORTED)})")
    if not as_vectors:
        return make(params), 1, None
    vectors, channels = _channel_vector(node, params, rank, 1)
    return make(vectors), channels, vectors


# ------------------------------------------------------------------------------------- rewriting
def _paquantize(graph: _Graph, node: onnx.NodeProto, x: str, out: str, thr: np.ndarray, lv: np.ndarray
                ) -> onnx.NodeProto:
    if thr.shape[0] == 1:
        thr, lv = thr[0], lv[0]
    t = graph.add_const(f"{out}__thresholds", np.ascontiguousarray(thr, np.float32))
    v = graph.add_const(f"{out}__levels", np.ascontiguousarray(lv, np.float32))
    return paquantize.paquantize_node(x, t, v, out, name=node.name or out)


def _activation(graph: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    shape = graph.shapes.get(node.input[0])
    rank = len(shape) if shape is not None else None
    if node.op_type == "MultiThreshold":
        return _multithreshold(graph, node, rank)
    op, channels, _ = quantizer_op(node, graph, as_vectors=True, rank=rank)
    count = len(op.codes())
    if count > ar.MAX_LEVELS:
        raise _fail(node, f"{count} levels: more than the {ar.MAX_LEVELS} an activation staircase holds (8 bits)")
    if channels > 1 and shape is not None and shape[1] not in (None, channels):
        raise _fail(node, f"{channels} per-channel parameters for {shape[1]} channels")
    try:
        thr, lv = ar.staircase_of(op, channels)
    except ValueError as exc:
        raise _fail(node, str(exc)) from None
    if not ar.check_staircase(op, thr, lv):   # never expected: the search is exact by construction
        raise _fail(node, "internal error: the staircase does not reproduce the quantizer")
    return _paquantize(graph, node, node.input[0], node.output[0], thr, lv)


def _multithreshold(graph: _Graph, node: onnx.NodeProto, rank: int | None) -> onnx.NodeProto:
    thresholds = np.asarray(graph.const(node, 1, "thresholds"))
    if thresholds.ndim != 2:
        raise _fail(node, f"thresholds must be [C, N] or [1, N], got shape {list(thresholds.shape)}")
    layout = _attr(node, "data_layout", "")
    if layout and layout.index("C") != 1 and thresholds.shape[0] > 1:
        raise _fail(node, f"per-channel thresholds in layout {layout} (patvm takes channels on axis 1)")
    if not np.all(np.isfinite(thresholds)):
        raise _fail(node, "thresholds must be finite")
    out_scale, out_bias = float(_attr(node, "out_scale", 1.0)), float(_attr(node, "out_bias", 0.0))
    thr = np.sort(thresholds.astype(np.float32), axis=1)
    counts = np.arange(thr.shape[1] + 1).astype(np.float32)
    levels = out_scale * counts + out_bias          # qonnx: out_scale * count(x >= t) + out_bias, float32
    if out_scale <= 0:
        raise _fail(node, "out_scale must be > 0")
    rows = []
    for row in thr:
        last = np.concatenate([row[1:] != row[:-1], [True]])     # equal thresholds: one step of several counts
        rows.append((row[last], np.concatenate([[levels[0]], levels[1:][last]])))
    width = max(len(t) for t, _ in rows)
    for i, (t, lv) in enumerate(rows):     # fewer distinct thresholds: pad above with steps of height 0
        while len(t) < width:
            top = np.nextafter(t[-1], F32(np.inf))
            if not np.isfinite(top):
                raise _fail(node, "cannot pad the thresholds of a channel above float32's largest value")
            t, lv = np.append(t, top), np.append(lv, lv[-1])
        rows[i] = (t, lv)
    return _paquantize(graph, node, node.input[0], node.output[0],
                       np.array([t for t, _ in rows]), np.array([v for _, v in rows], np.float32))


def _weight(graph: _Graph, node: onnx.NodeProto) -> tuple[np.ndarray, tuple | None]:
    """(folded weight, (integer weight, scale [O]) when the scale is per output channel, else None)."""
    if node.op_type == "MultiThreshold":
        raise _fail(node, "a MultiThreshold on a constant is not supported")
    op, _, _ = quantizer_op(node, graph, as_vectors=False)
    w = np.asarray(graph.consts[node.input[0]])
    if w.dtype != np.float32:
        raise _fail(node, f"weight must be float32, got {w.dtype}")
    folded = op(w)
    scale = np.asarray(op.scale)
    zero = np.asarray(getattr(op, "zero_point", np.zeros((), np.float32)))
    per_row = (w.ndim >= 2 and scale.ndim == w.ndim and scale.shape[0] == w.shape[0] > 1
               and all(d == 1 for d in scale.shape[1:]) and np.size(zero) == 1
               and len(np.unique(scale)) > 1)
    if not per_row or not hasattr(op, "integer"):
        return folded, None
    return folded, (op.integer(w), scale.reshape(-1).astype(np.float32))


def _scale_after(graph: _Graph, out: str, scale: np.ndarray, rank: int, axis: int, bias: np.ndarray | None
                 ) -> tuple[str, list[onnx.NodeProto]]:
    """Nodes computing `out` = `out__unscaled` * scale (+ bias), scale/bias shaped along `axis`."""
    shape = [1] * rank
    shape[axis] = scale.shape[0]
    s = graph.add_const(f"{out}__channel_scale", scale.reshape(shape))
    raw = f"{out}__unscaled"
    if bias is None:
        return raw, [helper.make_node("Mul", [raw, s], [out], name=f"{out}__scale")]
    b = graph.add_const(f"{out}__channel_bias", np.asarray(bias, np.float32).reshape(shape))
    return raw, [helper.make_node("Mul", [raw, s], [f"{out}__scaled"], name=f"{out}__scale"),
                 helper.make_node("Add", [f"{out}__scaled", b], [out], name=f"{out}__bias")]


# the weight axis that holds the output channels, per layer op (Gemm: by transB)
def _output_axis(node: onnx.NodeProto) -> int | None:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "MatMul":
        return 1
    if node.op_type == "Gemm" and not _attr(node, "transA", 0):
        return 0 if _attr(node, "transB", 0) else 1
    return None


def _factor_layers(graph: _Graph, nodes: list, factored: dict, consumers: dict) -> list:
    """Layers whose weight has a per-output-channel scale take the integer weight and a Mul after them."""
    result = []
    for node in nodes:
        weight = node.input[1] if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 else None
        if weight not in factored or len(consumers[weight]) != 1 or factored[weight][2] != _output_axis(node):
            result.append(node)
            continue
        integer, scale, _ = factored[weight]
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = graph.consts.get(node.input[2])
            if c is None or np.size(c) not in (1, scale.shape[0]):
                result.append(node)
                continue
            beta = np.float32(_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else np.float32(1)
            bias = np.broadcast_to(beta * c.astype(np.float32), scale.shape)
        out = node.output[0]
        rank = len(graph.shapes.get(out) or [None] * (4 if node.op_type == "Conv" else 2))
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[2:]
        new.input[1] = graph.add_const(f"{weight}__integer", integer)
        raw, tail = _scale_after(graph, out, scale, rank, 1 if node.op_type == "Conv" else rank - 1, bias)
        new.output[0] = raw
        result.extend([new] + tail)
    return result


def _fold_transpose(graph: _Graph, node: onnx.NodeProto, factored: dict) -> None:
    """A Transpose of a constant (TorchScript's Linear weights): folded, its per-channel factoring with it."""
    value = graph.consts[node.input[0]]
    perm = _attr(node, "perm", None)
    perm = list(perm) if perm is not None else list(range(np.ndim(value)))[::-1]
    graph.add_const(node.output[0], np.ascontiguousarray(np.transpose(value, perm)))
    if node.input[0] in factored:
        integer, scale, axis = factored[node.input[0]]
        factored[node.output[0]] = (np.ascontiguousarray(np.transpose(integer, perm)), scale, perm.index(axis))


def _fold_batchnorms(graph: _Graph, nodes: list) -> list:
    """BatchNormalization [-> Relu] -> PAQuantize, where nothing else reads the BatchNorm: one per-channel
    PAQuantize on the BatchNorm's input (times -1 in the channels of negative BN scale), with thresholds
    found exactly in onnxruntime's BatchNorm arithmetic (patvm.frontends.qonnx.arithmetic.FoldedBatchNorm)."""
    producers = {o: n for n in nodes for o in n.output}
    readers = defaultdict(int)
    for node in nodes:
        for i in node.input:
            readers[i] += 1
    result = []
    for node in nodes:
        folded = _fold_one(graph, node, producers, readers) if paquantize.is_paquantize(node) else None
        if folded is None:
            result.append(node)
        else:
            result.extend(folded)
    return result


def _fold_one(graph: _Graph, q: onnx.NodeProto, producers: dict, readers: dict) -> list | None:
    relu, bn = None, producers.get(q.input[0])
    if bn is not None and bn.op_type == "Relu" and readers[bn.output[0]] == 1:
        relu, bn = bn, producers.get(bn.input[0])
    if (bn is None or bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx") or len(bn.output) != 1
            or readers[bn.output[0]] != 1 or _attr(bn, "training_mode", 0)
            or not all(i in graph.consts for i in bn.input[1:5])):
        return None
    gamma, beta, mean, var = (np.asarray(graph.consts[i]) for i in bn.input[1:5])
    shape = graph.shapes.get(bn.input[0])
    channels = gamma.size
    if shape is None or len(shape) < 2 or shape[1] != channels or any(v.size != channels for v in (beta, mean, var)):
        return None
    thr, lv = (np.asarray(graph.consts[i], np.float32) for i in q.input[1:3])
    if thr.ndim == 1:
        thr, lv = np.tile(thr, (channels, 1)), np.tile(lv, (channels, 1))
    elif thr.shape[0] != channels:
        return None
    a, b = ar.FoldedBatchNorm.coefficients(gamma, beta, mean, var, float(_attr(bn, "epsilon", 1e-5)))
    sign = np.where(a < 0, np.float32(-1), np.float32(1))
    op = ar.FoldedBatchNorm(a, b, sign, relu is not None, thr, lv)
    tables = op.folded()
    if tables is None or not ar.check_staircase(op, *tables):
        return None
    x, out = bn.input[0], []
    if np.any(sign < 0):
        s = graph.add_const(f"{q.output[0]}__bn_sign", sign.reshape([1, channels] + [1] * (len(shape) - 2)))
        out.append(helper.make_node("Mul", [x, s], [f"{q.output[0]}__bn_signed"], name=f"{q.output[0]}__bn_sign"))
        x = out[-1].output[0]
    out.append(_paquantize(graph, q, x, q.output[0], *tables))
    return out


def _commute(graph: _Graph, nodes: list) -> list:
    """MaxPool / Reshape / Flatten of a PAQuantize output: the op first, the quantizer after it."""
    changed = True
    while changed:
        changed = False
        producers = {o: n for n in nodes for o in n.output}
        result = []
        for node in nodes:
            q = producers.get(node.input[0]) if node.input else None
            tables = None
            if (node.op_type in COMMUTING and node.domain in ("", "ai.onnx") and len(node.output) == 1
                    and q is not None and paquantize.is_paquantize(q)):
                tables = _commuted_tables(graph, q, node)
            if tables is None:
                result.append(node)
                continue
            moved = onnx.NodeProto()
            moved.CopyFrom(node)
            moved.input[0] = q.input[0]
            moved.output[0] = f"{node.output[0]}__before_quantizer"
            requant = paquantize.paquantize_node(moved.output[0], *tables, node.output[0],
                                                 name=f"{q.name}__after_{node.op_type}")
            result.extend([moved, requant])
            changed = True
        nodes = result
    return nodes


def _commuted_tables(graph: _Graph, q: onnx.NodeProto, node: onnx.NodeProto) -> tuple[str, str] | None:
    """The (thresholds, levels) names of the quantizer after `node`, or None when they do not commute."""
    thr, lv = graph.consts[q.input[1]], graph.consts[q.input[2]]
    if node.op_type == "MaxPool":                              # max of a non-decreasing staircase
        return (q.input[1], q.input[2]) if bool(np.all(np.diff(lv, axis=-1) >= 0)) else None
    if thr.ndim == 1:                                          # a reshape keeps per-tensor elementwise ops
        return q.input[1], q.input[2]
    # per channel: a flatten [n, C, ...] -> [n, C * rest] repeats each channel's row over its positions
    before, after = graph.shapes.get(q.output[0]), graph.shapes.get(node.output[0])
    if (before is None or after is None or None in before or None in after or len(after) != 2
            or after[0] != before[0] or after[1] != int(np.prod(before[1:])) or before[1] != thr.shape[0]):
        return None
    positions = int(np.prod(before[2:]))
    t = graph.add_const(f"{node.output[0]}__thresholds", np.repeat(thr, positions, axis=0))
    v = graph.add_const(f"{node.output[0]}__levels", np.repeat(lv, positions, axis=0))
    return t, v


def _dead_code(nodes: list, outputs: set) -> list:
    live, kept = set(outputs), []
    for node in reversed(nodes):
        if any(o in live for o in node.output):
            kept.append(node)
            live.update(i for i in node.input if i)
            for attr in node.attribute:   # names used inside subgraphs stay live
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    live.update(i for n in sub.node for i in n.input)
    return kept[::-1]


# ------------------------------------------------------------------------------------- QCDQ
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


def _dequantize(graph: _Graph, node: onnx.NodeProto, producers: dict):
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
    axis = int(_attr(node, "axis", 1))
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
    if scale is None or zero is None or zero.dtype != dtype or int(_attr(quant, "axis", 1)) != axis:
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
        raise _fail(node, str(exc)) from None
    if not ar.check_staircase(op, thr, lv):
        raise _fail(node, "internal error: the staircase does not reproduce QuantizeLinear -> DequantizeLinear")
    return "activation", _paquantize(graph, node, quant.input[0], node.output[0], thr, lv)


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


def needs_rewrite(model: onnx.ModelProto) -> bool:
    return is_qonnx(model) or has_low_bit_qcdq(model)


def to_canonical(model: onnx.ModelProto, fold_batchnorm: bool = True) -> onnx.ModelProto:
    """The canonical PA-ONNX form of a QONNX model (a new model; `model` is not changed).
    fold_batchnorm=False keeps BatchNorms in front of quantizers as they are (benchmarks' float twin)."""
    graph = _Graph(model)
    nodes, factored = [], {}
    producers = {o: n for n in graph.nodes for o in n.output}
    for node in graph.nodes:
        chain = _dequantize(graph, node, producers) if node.op_type == "DequantizeLinear" else None
        if chain is not None and chain[0] == "weight":
            graph.add_const(node.output[0], chain[1])
            if chain[2] is not None:
                factored[node.output[0]] = chain[2] + (0,)
            continue
        if node.op_type == "Transpose" and node.domain in ("", "ai.onnx") and node.input[0] in graph.consts:
            _fold_transpose(graph, node, factored)
            continue
        if chain is not None:
            nodes.append(chain[1])
            continue
        if node.domain not in QONNX_DOMAINS:
            if node.domain not in ("", "ai.onnx"):
                raise ModelError(f"node '{node.name}' uses unsupported domain '{node.domain}'")
            nodes.append(node)
            continue
        if node.op_type not in SUPPORTED:
            raise _fail(node, f"QONNX op '{node.op_type}' is not supported (patvm takes {', '.join(SUPPORTED)})")
        if node.input[0] in graph.consts:
            folded, per_channel = _weight(graph, node)
            graph.add_const(node.output[0], folded)
            if per_channel is not None:
                factored[node.output[0]] = per_channel + (0,)
        else:
            nodes.append(_activation(graph, node))
    consumers = defaultdict(list)
    for node in nodes:
        for i in node.input:
            consumers[i].append(node)
    nodes = _factor_layers(graph, nodes, factored, consumers)
    if fold_batchnorm:
        nodes = _fold_batchnorms(graph, nodes)
    nodes = _commute(graph, nodes)
    nodes = _dead_code(nodes, {o.name for o in model.graph.output})
    return _assemble(model, graph, nodes)


def _assemble(model: onnx.ModelProto, graph: _Graph, nodes: list) -> onnx.ModelProto:
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    for name, value in graph.consts.items():
        if name in used:
            g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    inputs = [vi for vi in g.input if vi.name not in graph.consts]   # initializers are not inputs here
    del g.input[:]
    g.input.extend(inputs)
    produced = {o for n in nodes for o in n.output}
    infos = [vi for vi in g.value_info if vi.name in produced]
    # PAQuantize keeps its input's shape; ONNX shape inference knows no ai.patvm op, so say it
    known = {vi.name for vi in infos} | {o.name for o in g.output}
    for node in nodes:
        shape = graph.shapes.get(node.output[0]) or graph.shapes.get(node.input[0])
        if paquantize.is_paquantize(node) and node.output[0] not in known and shape and None not in shape:
            infos.append(helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, shape))
    del g.value_info[:]
    g.value_info.extend(infos)
    opsets = [o for o in out.opset_import if o.domain not in QONNX_DOMAINS + (paquantize.DOMAIN,)]
    del out.opset_import[:]
    out.opset_import.extend(opsets + [helper.make_opsetid(paquantize.DOMAIN, paquantize.VERSION)])
    # no PAQuantize function: its body is opset 17 and ONNX requires a function to import the model's own
    # default opset version (Brevitas writes 18-20); patvm recognises the node by domain and op type
    return out
