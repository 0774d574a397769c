"""Memory and Flops of a (PA-)ONNX model, counted the way the PA paper does (sec. 4.6.1, Table 7).

A layer is *binary* when it is a Conv / Gemm / MatMul whose data input is an `ai.patvm.PAQuantize`
output and whose weights take few distinct values; every other weighted layer is *fp32*.

Memory (Mbit = 1e6 bits):
  * 32 bits per real-valued parameter: fp32 weights and biases, the M scales (and the ABC offset) of a
    binary layer, PAQuantize thresholds and levels, and 2 per BatchNorm channel (scale and shift: what a
    BN is once its running mean/var are folded in; torchvision's parameter count, which gives the
    full-precision 374.1 / 697.3 / 817.8 Mbit of Table 7).
  * M bits per binary weight, M = the number of {0,1} weight planes (`decompose_weights`): for PA the
    number of distinct non-zero values (eq. 15-16), for ABC-Net the number of bases (eq. 1).
Flops (per forward pass of the model's batch):
  * fp32 Conv / Gemm / MatMul: one Flop per multiply-accumulate (Table 7's ResNet18 1.81e9 is its MACs).
  * binary layer, eq. 19 sum_ij alpha_i beta_j conv(T_i, V_j): M*N bitwise AND+popcount operations per
    MAC, counted 1/64 (64-bit words), plus M*N real multiplications (alpha_i beta_j) per output element.
  * BatchNorm, ReLU, Add, pooling, and the PAQuantize comparisons are not counted in Flops. The
    comparisons (N per quantized element) are reported apart as `comparisons`: adding them to Flops
    moves PA-ResNet50 to 1.53e9, 6% over Table 7's 1.44e9, so the table evidently leaves them out.

With these rules the Table 7 rows for ResNet18/34/50 and PA-ResNet18/50 (M=4, N=5) come out within 2%
(memory) and 3% (Flops); PA-ResNet34's 85.0 Mbit does not: 85.0 is its binary weights alone (85.03),
the same counting gives 102.3 once its fp32 first conv, FC and BN (17.3 Mbit) are added as they are for
PA-ResNet18 (61.6) and PA-ResNet50 (161.3). ResNet-50 must be the v1 bottleneck (stride on the first
1x1) to give Table 7's 3.86e9; torchvision's v1.5 is 4.09e9.

Shapes come from `onnx.shape_inference` on a copy whose PAQuantize nodes are Identity (inference does
not go through the model-local function; PAQuantize keeps its input's shape); symbolic dims count as 1.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from patvm.approx.planes import decompose_weights
from patvm.errors import ModelError, PatvmError, first_line, require
from patvm.onnx_format import is_paquantize

BITS_PER_REAL = 32
MBIT = 1e6
POPCOUNT_WIDTH = 64
MAX_BINARY_VALUES = 256
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
SMALL_CONSTANT = 64   # initializers up to this size stay in the shape-inference copy (shape tensors)


# ---- loading
def load_checked(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file through patvm's safe loader (patvm.onnx_format.validate.load_model: file, protobuf,
    tensors, external data, the full ONNX checker), as every other command does; ModelError with one line if
    anything is wrong."""
    from patvm.onnx_format.validate import load_model
    path = os.fspath(path)
    model = load_model(path)
    require(len(model.graph.node) > 0, f"{path} is not an ONNX model (no graph nodes)", ModelError)
    return model


# ---- shapes and constants
def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and not node.domain:
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


def _dims(value_info: onnx.ValueInfoProto) -> list[int] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [int(d.dim_value) if d.HasField("dim_value") else 1 for d in t.shape.dim]


def infer_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every value's shape; PAQuantize passes its input's shape through (inferred as an Identity)."""
    g = model.graph
    nodes = [helper.make_node("Identity", [n.input[0]], [n.output[0]], name=n.name) if is_paquantize(n) else n
             for n in g.node]
    declared = {i.name for i in g.input}
    small = [t for t in g.initializer if int(np.prod(t.dims)) <= SMALL_CONSTANT]
    big = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
           for t in g.initializer if int(np.prod(t.dims)) > SMALL_CONSTANT and t.name not in declared]
    light = helper.make_model(helper.make_graph(nodes, g.name, list(g.input) + big, list(g.output), small),
                              opset_imports=list(model.opset_import))
    light.ir_version = model.ir_version
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True).graph
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        raise ModelError(f"stats: shape inference failed: {first_line(exc)}") from exc
    shapes = {}
    for vi in (*inferred.input, *inferred.value_info, *inferred.output):
        dims = _dims(vi)
        if dims is not None:
            shapes[vi.name] = dims
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


# ---- per layer
def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _reduction_size(node: onnx.NodeProto, weight: np.ndarray, in_shape: list[int]) -> int:
    """Multiply-accumulates per output element."""
    if node.op_type == "Conv":
        return int(np.prod(weight.shape[1:]))
    if node.op_type == "Gemm":
        return int(in_shape[0] if _attr(node, "transA", 0) else in_shape[1])
    return int(in_shape[-1])


def _weight_planes(weight: np.ndarray):
    """The {0,1} plane decomposition of a binary layer's weights, or None if they are not few-valued."""
    try:
        return decompose_weights(weight, max_values=MAX_BINARY_VALUES)
    except PatvmError:
        return None


def _layer(name, op, kind, binary_params, real_params, M, N, macs, flops, shapes, comparisons=0) -> dict:
    bits = BITS_PER_REAL * real_params + (M or 0) * binary_params
    return {"name": name, "op": op, "kind": kind, "params": int(binary_params + real_params),
            "binary_params": int(binary_params), "real_params": int(real_params),
            "memory_mbit": bits / MBIT, "macs": int(macs), "flops": float(flops), "comparisons": int(comparisons),
            "M": M, "N": N, "shapes": shapes}


def _shape_of(shapes: dict, value: str, node: onnx.NodeProto) -> list[int]:
    require(value in shapes, f"stats: cannot infer the shape of '{value}' ({node.op_type} node '{node.name}')",
            ModelError)
    return shapes[value]


def _weighted_layer(node, consts, shapes, producer) -> dict:
    require(len(node.input) > 1 and node.input[1] in consts,
            f"stats: {node.op_type} node '{node.name}' has no constant weights", ModelError)
    weight = consts[node.input[1]]
    bias = consts.get(node.input[2]) if len(node.input) > 2 else None
    in_shape = _shape_of(shapes, node.input[0], node)
    out_shape = _shape_of(shapes, node.output[0], node)
    outputs = int(np.prod(out_shape))
    macs = outputs * _reduction_size(node, weight, in_shape)
    n_bias = 0 if bias is None else int(bias.size)
    shape_info = {"input": in_shape, "output": out_shape, "weight": list(weight.shape)}
    quantizer = producer.get(node.input[0])
    planes = _weight_planes(weight) if quantizer is not None else None
    if planes is None:
        return _layer(node.name, node.op_type, "fp32", 0, weight.size + n_bias, None, None, macs, macs, shape_info)
    M = planes.count
    N = int(consts[quantizer.input[1]].shape[-1])
    reals = M + (1 if planes.offset else 0) + n_bias
    flops = M * N * macs / POPCOUNT_WIDTH + M * N * outputs   # eq. 19: bitwise / 64 + alpha_i beta_j products
    return _layer(node.name, node.op_type, "binary", weight.size, reals, M, N, macs, flops, shape_info)


def _quantizer_layer(node, consts, shapes) -> dict:
    require(node.input[1] in consts and node.input[2] in consts,
            f"stats: PAQuantize node '{node.name}' has no constant thresholds/levels", ModelError)
    thresholds, levels = consts[node.input[1]], consts[node.input[2]]
    shape = _shape_of(shapes, node.input[0], node)
    N = int(thresholds.shape[-1])
    return _layer(node.name, node.op_type, "fp32", 0, thresholds.size + levels.size, None, N, 0, 0.0,
                  {"input": shape, "output": shape}, comparisons=N * int(np.prod(shape)))


def _batchnorm_layer(node, consts, shapes) -> dict:
    scale, bias = (consts.get(v) for v in node.input[1:3])
    require(scale is not None and bias is not None,
            f"stats: BatchNormalization node '{node.name}' has no constant scale/bias", ModelError)
    shape = _shape_of(shapes, node.input[0], node)
    return _layer(node.name, node.op_type, "fp32", 0, scale.size + bias.size, None, None, 0, 0.0,
                  {"input": shape, "output": shape})


def model_stats(model: onnx.ModelProto) -> dict:
    """Per-layer and total memory (Mbit) and Flops under the module docstring's rules."""
    consts = _constants(model)
    shapes = infer_shapes(model)
    producer = {n.output[0]: n for n in model.graph.node if is_paquantize(n)}
    layers = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS and not node.domain:
            layers.append(_weighted_layer(node, consts, shapes, producer))
        elif is_paquantize(node):
            layers.append(_quantizer_layer(node, consts, shapes))
        elif node.op_type == "BatchNormalization" and not node.domain:
            layers.append(_batchnorm_layer(node, consts, shapes))
    total = {key: sum(layer[key] for layer in layers)
             for key in ("memory_mbit", "flops", "params", "binary_params", "real_params", "macs", "comparisons")}
    total["memory_mbit"] = float(total["memory_mbit"])
    total["flops"] = float(total["flops"])
    total["binary_layers"] = sum(layer["kind"] == "binary" for layer in layers)
    return {"model": model.graph.name, "layers": layers, "total": total}


# ---- text
COLUMNS = (("layer", 18, "name"), ("op", 18, "op"), ("kind", 6, "kind"), ("M", 3, "M"), ("N", 3, "N"),
           ("params", 10, "params"), ("Mbit", 9, "memory_mbit"), ("MFlops", 10, "flops"), ("output", 18, None))


def _cell(layer: dict, key: str | None) -> str:
    if key is None:
        return "x".join(map(str, layer["shapes"]["output"]))
    value = layer[key]
    if value is None:
        return "-"
    if key == "memory_mbit":
        return f"{value:.3f}"
    if key == "flops":
        return f"{value / 1e6:.2f}"
    return str(value)


def format_table(result: dict) -> str:
    """A text table: one row per layer with parameters or Flops, then the totals."""
    def row(cells):
        return "  ".join(f"{c:<{w}}" if i < 3 else f"{c:>{w}}" for i, (c, (_, w, _)) in enumerate(zip(cells, COLUMNS)))
    lines = [row([title for title, _, _ in COLUMNS]), "-" * (sum(w for _, w, _ in COLUMNS) + 2 * (len(COLUMNS) - 1))]
    lines += [row([_cell(layer, key) for _, _, key in COLUMNS]) for layer in result["layers"]]
    t = result["total"]
    lines.append(lines[1])
    lines.append(f"total: {t['memory_mbit']:.2f} Mbit, {t['flops']:.4g} Flops ({t['macs']:.4g} MACs), "
                 f"{t['params']} parameters ({t['binary_params']} binary), {t['binary_layers']} binary layers, "
                 f"{t['comparisons']:.4g} quantizer comparisons (not in Flops)")
    return "\n".join(lines)
