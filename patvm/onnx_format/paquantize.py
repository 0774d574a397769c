"""The `ai.patvm.PAQuantize` node (version 1) and the model-local ONNX function that defines it.

    Y = PAQuantize(X, thresholds, levels)
    Y = levels[k], k = number of thresholds <= X; thresholds [N] (per tensor) or [C, N] (per channel on
    axis 1); levels [N+1] or [C, N+1]; levels[0] is the value below the first threshold; NaN gives levels[0].

The function body uses standard ops only (opset 17), so onnxruntime runs a PA-ONNX model unchanged. It
is exact: the output is selected from the levels, never computed from them (a one-hot ReduceMax). patvm
itself recognises the node by domain and op type and never reads the body (docs/pa-onnx.md).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "ai.patvm"
OP_TYPE = "PAQuantize"
VERSION = 1
STANDARD_OPSET = 17


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def paquantize_function() -> onnx.FunctionProto:
    """Body: view tables as [C', N] (C' = 1 per tensor), reshape to [C', 1 x (rank-2), N], count, select."""
    nodes = [
        _const("neg1", np.array([-1], np.int64)),
        _const("zero", np.array([0], np.int64)),
        _const("one", np.array([1], np.int64)),
        _const("two", np.array([2], np.int64)),
        _const("ninf", np.array(-np.inf, np.float32)),
        _const("izero", np.array(0, np.int64)),
        _const("ione", np.array(1, np.int64)),
        # rank-dependent broadcast shape [C', 1, ..., 1, -1] with rank(X) - 2 ones
        helper.make_node("Shape", ["X"], ["xshape"]),
        helper.make_node("Shape", ["xshape"], ["xrank"]),
        helper.make_node("Sub", ["xrank", "two"], ["nones"]),
        helper.make_node(
            "ConstantOfShape", ["nones"], ["ones"], value=numpy_helper.from_array(np.array([1], np.int64))
        ),
        helper.make_node("Concat", ["neg1", "ones"], ["lead"], axis=0),
        # thresholds -> [C', N] -> broadcast form
        helper.make_node("Shape", ["thresholds"], ["tshape"]),
        helper.make_node("Slice", ["tshape", "neg1", "xrank"], ["tlast"]),
        helper.make_node("Concat", ["neg1", "tlast"], ["t2shape"], axis=0),
        helper.make_node("Reshape", ["thresholds", "t2shape"], ["t2"]),
        helper.make_node("Shape", ["t2"], ["t2s"]),
        helper.make_node("Slice", ["t2s", "zero", "one"], ["cdim"]),
        helper.make_node("Concat", ["cdim", "ones", "tlast"], ["tbshape"], axis=0),
        helper.make_node("Reshape", ["t2", "tbshape"], ["tb"]),
        # k = number of thresholds <= X (NaN compares false: k = 0)
        helper.make_node("Unsqueeze", ["X", "neg1"], ["xu"]),
        helper.make_node("GreaterOrEqual", ["xu", "tb"], ["ge"]),
        helper.make_node("Cast", ["ge"], ["gei"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["gei", "neg1"], ["k"], keepdims=1),
        # levels -> broadcast form, select levels[k] exactly
        helper.make_node("Shape", ["levels"], ["lshape"]),
        helper.make_node("Slice", ["lshape", "neg1", "xrank"], ["llast"]),
        helper.make_node("Concat", ["cdim", "ones", "llast"], ["lbshape"], axis=0),
        helper.make_node("Reshape", ["levels", "lbshape"], ["lb"]),
        helper.make_node("Squeeze", ["llast"], ["nlevels"]),
        helper.make_node("Range", ["izero", "nlevels", "ione"], ["idx"]),
        helper.make_node("Equal", ["k", "idx"], ["onehot"]),
        helper.make_node("Where", ["onehot", "lb", "ninf"], ["picked"]),
        helper.make_node("ReduceMax", ["picked"], ["Y"], axes=[-1], keepdims=0),
    ]
    return helper.make_function(DOMAIN, OP_TYPE, ["X", "thresholds", "levels"], ["Y"], nodes,
                                [helper.make_opsetid("", STANDARD_OPSET)])


def paquantize_node(x: str, thresholds: str, levels: str, y: str, name: str | None = None) -> onnx.NodeProto:
    return helper.make_node(OP_TYPE, [x, thresholds, levels], [y], name=name or y, domain=DOMAIN)


def is_paquantize(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def opset_imports() -> list[onnx.OperatorSetIdProto]:
    return [helper.make_opsetid("", STANDARD_OPSET), helper.make_opsetid(DOMAIN, VERSION)]


def attach_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give `model` the PAQuantize function and the ai.patvm opset if it uses the node and lacks them."""
    if not any(is_paquantize(n) for n in model.graph.node):
        return model
    if not any(f.domain == DOMAIN and f.name == OP_TYPE for f in model.functions):
        model.functions.append(paquantize_function())
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, VERSION))
    return model
