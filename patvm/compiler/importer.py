"""Phase 1, import: a checked ONNX model -> a Relax IRModule.

`tvm.relax.frontend.onnx.from_onnx` knows no custom domains, and the importer's form of a model-local
function body depends on whichever ops that body uses. So patvm replaces every `ai.patvm.PAQuantize`
node (recognised by domain and op type; the body is never read) by one canonical standard-op chain with
constant tables, whose Relax form `patvm.compiler.match.quantizer_pattern` recognises:

    k = ReduceSum(Cast(GreaterOrEqual(Unsqueeze(X, -1), T), int32), -1, keepdims=1)
    Y = ReduceSum(Where(Equal(k, arange(N+1)), L, 0), -1, keepdims=0)

T and L are the thresholds and levels shaped to broadcast against X (per channel: [C, 1, .., 1, N]).
The chain is exact (Y is selected from L), so it is also the fp32 fall-back of an unmatched quantizer.

(Relu and MaxPool keep their ONNX NaN semantics through patvm.compiler.legalize, in the build phase.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from patvm.approx.staircase import Staircase, broadcast_per_channel
from patvm.errors import ModelError, PatvmError, first_line, last_line, require
from patvm.frontends import qonnx as qonnx_frontend
from patvm.onnx_format import paquantize
from patvm.onnx_format.validate import load_model, value_ranks

if TYPE_CHECKING:       # the annotation only: importing this module does not load TVM
    import tvm


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: tuple[int, ...]
    dtype: str


def graph_inputs(model: onnx.ModelProto) -> list[GraphInput]:
    init_names = {i.name for i in model.graph.initializer}
    result = []
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        require(all(d > 0 for d in dims), f"input '{vi.name}' needs a static shape, got {list(dims)}", ModelError)
        require(tt.elem_type == TensorProto.FLOAT, f"input '{vi.name}' must be float32", ModelError)
        result.append(GraphInput(vi.name, dims, "float32"))
    require(bool(result), "the model has no graph inputs", ModelError)
    return result


def _value_ranks(model: onnx.ModelProto) -> dict[str, int]:
    try:
        return value_ranks(model)
    except Exception as exc:  # onnx raises several types; all mean "cannot infer"
        raise ModelError(f"ONNX shape inference failed: {first_line(exc)}") from exc


def quantizer_staircase(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> Staircase:
    where = f"PAQuantize node '{node.name or node.output[0]}'"
    require(len(node.input) == 3 and len(node.output) == 1, f"{where}: needs inputs (X, thresholds, levels)",
            ModelError)
    for role, name in (("thresholds", node.input[1]), ("levels", node.input[2])):
        require(name in initializers, f"{where}: {role} '{name}' must be an initializer (a constant)", ModelError)
    thr = numpy_helper.to_array(initializers[node.input[1]])
    lv = numpy_helper.to_array(initializers[node.input[2]])
    require(thr.dtype == np.float32 and lv.dtype == np.float32, f"{where}: thresholds and levels must be float32",
            ModelError)
    try:
        return Staircase(thr, lv)
    except PatvmError as exc:
        raise ModelError(f"{where}: {str(exc).split(': ', 1)[-1]}") from exc


def _canonical_quantizer(node: onnx.NodeProto, stair: Staircase, rank: int) -> tuple[list, list]:
    """The standard-op chain (module docstring) for one PAQuantize node: (nodes, initializers)."""
    out = node.output[0]
    pre = f"{out}__paq"
    thr = broadcast_per_channel(stair.thresholds, rank)
    lv = broadcast_per_channel(stair.levels, rank)
    inits = [
        numpy_helper.from_array(np.array([-1], np.int64), f"{pre}_axis"),
        numpy_helper.from_array(np.ascontiguousarray(thr), f"{pre}_thresholds"),
        numpy_helper.from_array(np.arange(stair.N + 1, dtype=np.int32), f"{pre}_index"),
        numpy_helper.from_array(np.ascontiguousarray(lv), f"{pre}_levels"),
        numpy_helper.from_array(np.array(0.0, np.float32), f"{pre}_zero"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", [node.input[0], f"{pre}_axis"], [f"{pre}_xu"]),
        helper.make_node("GreaterOrEqual", [f"{pre}_xu", f"{pre}_thresholds"], [f"{pre}_ge"]),
        helper.make_node("Cast", [f"{pre}_ge"], [f"{pre}_gei"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", [f"{pre}_gei", f"{pre}_axis"], [f"{pre}_k"], keepdims=1),
        helper.make_node("Equal", [f"{pre}_k", f"{pre}_index"], [f"{pre}_onehot"]),
        helper.make_node("Where", [f"{pre}_onehot", f"{pre}_levels", f"{pre}_zero"], [f"{pre}_picked"]),
        helper.make_node("ReduceSum", [f"{pre}_picked", f"{pre}_axis"], [out], keepdims=0),
    ]
    return nodes, inits


def canonicalize_quantizers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every PAQuantize replaced by the canonical chain, without the ai.patvm function
    and opset."""
    initializers = {t.name: t for t in model.graph.initializer}
    quantizers = [n for n in model.graph.node if paquantize.is_paquantize(n)]
    ranks = _value_ranks(model) if quantizers else {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for node in model.graph.node:
        if not paquantize.is_paquantize(node):
            require(node.domain in ("", "ai.onnx"), f"node '{node.name}' uses unsupported domain '{node.domain}'",
                    ModelError)
            out.graph.node.append(node)
            continue
        stair = quantizer_staircase(node, initializers)
        rank = ranks.get(node.input[0])
        require(rank is not None or not stair.per_channel,
                f"PAQuantize node '{node.name}': cannot infer the rank of its input", ModelError)
        if stair.per_channel:
            require(rank >= 2, f"PAQuantize node '{node.name}': per-channel thresholds need rank >= 2", ModelError)
        nodes, inits = _canonical_quantizer(node, stair, rank or 1)
        out.graph.node.extend(nodes)
        out.graph.initializer.extend(inits)
    keep_functions = [f for f in out.functions if f.domain != paquantize.DOMAIN]
    del out.functions[:]
    out.functions.extend(keep_functions)
    keep_opsets = [o for o in out.opset_import if o.domain != paquantize.DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(keep_opsets)
    return out


def import_model(model_or_path) -> tuple[tvm.IRModule, onnx.ModelProto, list[GraphInput]]:
    """Load, check and convert. Returns (Relax module, the checked ONNX model, its inputs)."""
    from tvm.relax.frontend.onnx import from_onnx

    model = load_model(model_or_path)
    if qonnx_frontend.needs_rewrite(model):   # Brevitas QONNX / low-bit QCDQ: into the canonical form first
        model = qonnx_frontend.to_canonical(model)
    inputs = graph_inputs(model)
    canonical = canonicalize_quantizers(model)
    try:
        mod = from_onnx(canonical, keep_params_in_input=False)
    except Exception as exc:  # the frontend raises assorted errors for unsupported graphs
        raise ModelError(f"TVM's ONNX importer refused the model: {last_line(exc, 300)}") from exc
    return mod, model, inputs
