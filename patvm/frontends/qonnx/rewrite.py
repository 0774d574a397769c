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

from patvm.errors import ModelError
from patvm.frontends.qonnx import arithmetic as ar
from patvm.frontends.qonnx.graph import (
    COMMUTING,
    F32,
    QONNX_DOMAINS,
    SUPPORTED,
    Graph,
    is_qonnx,
    node_attr,
    node_error,
    quantize_with_tables,
    quantizer_op,
)
from patvm.frontends.qonnx.qcdq import dequantize_pair, has_low_bit_qcdq
from patvm.onnx_format import paquantize


def _activation(graph: Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    shape = graph.shapes.get(node.input[0])
    rank = len(shape) if shape is not None else None
    if node.op_type == "MultiThreshold":
        return _multithreshold(graph, node, rank)
    op, channels, _ = quantizer_op(node, graph, as_vectors=True, rank=rank)
    count = len(op.codes())
    if count > ar.MAX_LEVELS:
        raise node_error(node, f"{count} levels: more than the {ar.MAX_LEVELS} an activation staircase holds (8 bits)")
    if channels > 1 and shape is not None and shape[1] not in (None, channels):
        raise node_error(node, f"{channels} per-channel parameters for {shape[1]} channels")
    try:
        thr, lv = ar.staircase_of(op, channels)
    except ValueError as exc:
        raise node_error(node, str(exc)) from None
    if not ar.check_staircase(op, thr, lv):   # never expected: the search is exact by construction
        raise node_error(node, "internal error: the staircase does not reproduce the quantizer")
    return quantize_with_tables(graph, node, node.input[0], node.output[0], thr, lv)


def _multithreshold(graph: Graph, node: onnx.NodeProto, rank: int | None) -> onnx.NodeProto:
    thresholds = np.asarray(graph.const(node, 1, "thresholds"))
    if thresholds.ndim != 2:
        raise node_error(node, f"thresholds must be [C, N] or [1, N], got shape {list(thresholds.shape)}")
    layout = node_attr(node, "data_layout", "")
    if layout and layout.index("C") != 1 and thresholds.shape[0] > 1:
        raise node_error(node, f"per-channel thresholds in layout {layout} (patvm takes channels on axis 1)")
    if not np.all(np.isfinite(thresholds)):
        raise node_error(node, "thresholds must be finite")
    out_scale, out_bias = float(node_attr(node, "out_scale", 1.0)), float(node_attr(node, "out_bias", 0.0))
    thr = np.sort(thresholds.astype(np.float32), axis=1)
    counts = np.arange(thr.shape[1] + 1).astype(np.float32)
    levels = out_scale * counts + out_bias          # qonnx: out_scale * count(x >= t) + out_bias, float32
    if out_scale <= 0:
        raise node_error(node, "out_scale must be > 0")
    rows = []
    for row in thr:
        last = np.concatenate([row[1:] != row[:-1], [True]])     # equal thresholds: one step of several counts
        rows.append((row[last], np.concatenate([[levels[0]], levels[1:][last]])))
    width = max(len(t) for t, _ in rows)
    for i, (t, lv) in enumerate(rows):     # fewer distinct thresholds: pad above with steps of height 0
        while len(t) < width:
            top = np.nextafter(t[-1], F32(np.inf))
            if not np.isfinite(top):
                raise node_error(node, "cannot pad the thresholds of a channel above float32's largest value")
            t, lv = np.append(t, top), np.append(lv, lv[-1])
        rows[i] = (t, lv)
    return quantize_with_tables(graph, node, node.input[0], node.output[0],
                       np.array([t for t, _ in rows]), np.array([v for _, v in rows], np.float32))


def _weight(graph: Graph, node: onnx.NodeProto) -> tuple[np.ndarray, tuple | None]:
    """(folded weight, (integer weight, scale [O]) when the scale is per output channel, else None)."""
    if node.op_type == "MultiThreshold":
        raise node_error(node, "a MultiThreshold on a constant is not supported")
    op, _, _ = quantizer_op(node, graph, as_vectors=False)
    w = np.asarray(graph.consts[node.input[0]])
    if w.dtype != np.float32:
        raise node_error(node, f"weight must be float32, got {w.dtype}")
    folded = op(w)
    scale = np.asarray(op.scale)
    zero = np.asarray(getattr(op, "zero_point", np.zeros((), np.float32)))
    per_row = (w.ndim >= 2 and scale.ndim == w.ndim and scale.shape[0] == w.shape[0] > 1
               and all(d == 1 for d in scale.shape[1:]) and np.size(zero) == 1
               and len(np.unique(scale)) > 1)
    if not per_row or not hasattr(op, "integer"):
        return folded, None
    return folded, (op.integer(w), scale.reshape(-1).astype(np.float32))


def _scale_after(graph: Graph, out: str, scale: np.ndarray, rank: int, axis: int, bias: np.ndarray | None
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
    if node.op_type == "Gemm" and not node_attr(node, "transA", 0):
        return 0 if node_attr(node, "transB", 0) else 1
    return None


def _factor_layers(graph: Graph, nodes: list, factored: dict, consumers: dict) -> list:
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
            beta = np.float32(node_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else np.float32(1)
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


def _fold_transpose(graph: Graph, node: onnx.NodeProto, factored: dict) -> None:
    """A Transpose of a constant (TorchScript's Linear weights): folded, its per-channel factoring with it."""
    value = graph.consts[node.input[0]]
    perm = node_attr(node, "perm", None)
    perm = list(perm) if perm is not None else list(range(np.ndim(value)))[::-1]
    graph.add_const(node.output[0], np.ascontiguousarray(np.transpose(value, perm)))
    if node.input[0] in factored:
        integer, scale, axis = factored[node.input[0]]
        factored[node.output[0]] = (np.ascontiguousarray(np.transpose(integer, perm)), scale, perm.index(axis))


def _fold_batchnorms(graph: Graph, nodes: list) -> list:
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


def _fold_one(graph: Graph, q: onnx.NodeProto, producers: dict, readers: dict) -> list | None:
    relu, bn = None, producers.get(q.input[0])
    if bn is not None and bn.op_type == "Relu" and readers[bn.output[0]] == 1:
        relu, bn = bn, producers.get(bn.input[0])
    if (bn is None or bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx") or len(bn.output) != 1
            or readers[bn.output[0]] != 1 or node_attr(bn, "training_mode", 0)
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
    a, b = ar.FoldedBatchNorm.coefficients(gamma, beta, mean, var, float(node_attr(bn, "epsilon", 1e-5)))
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
    out.append(quantize_with_tables(graph, q, x, q.output[0], *tables))
    return out


def _commute(graph: Graph, nodes: list) -> list:
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


def _commuted_tables(graph: Graph, q: onnx.NodeProto, node: onnx.NodeProto) -> tuple[str, str] | None:
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


def needs_rewrite(model: onnx.ModelProto) -> bool:
    return is_qonnx(model) or has_low_bit_qcdq(model)


def to_canonical(model: onnx.ModelProto, fold_batchnorm: bool = True) -> onnx.ModelProto:
    """The canonical PA-ONNX form of a QONNX model (a new model; `model` is not changed).
    fold_batchnorm=False keeps BatchNorms in front of quantizers as they are (benchmarks' float twin)."""
    graph = Graph(model)
    nodes, factored = [], {}
    producers = {o: n for n in graph.nodes for o in n.output}
    for node in graph.nodes:
        chain = dequantize_pair(graph, node, producers) if node.op_type == "DequantizeLinear" else None
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
            raise node_error(node, f"QONNX op '{node.op_type}' is not supported (patvm takes {', '.join(SUPPORTED)})")
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


def _assemble(model: onnx.ModelProto, graph: Graph, nodes: list) -> onnx.ModelProto:
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
