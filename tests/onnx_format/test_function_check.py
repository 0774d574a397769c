"""A PAQuantize function written by someone else is accepted when it computes the definition and refused,
naming node, input, expected and computed value, when it does not (patvm.onnx_format.function_check)."""
import importlib.util
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import patvm
from patvm.approx import Staircase
from patvm.errors import ModelError
from patvm.onnx_format import DOMAIN, OP_TYPE, GraphWriter
from patvm.onnx_format.function_check import channel_probe_values
from patvm.onnx_format.paquantize import STANDARD_OPSET, paquantize_function
from patvm.onnx_format.validate import load_model

_spec = importlib.util.spec_from_file_location("_patvm_function_check_builders",
                                               Path(__file__).resolve().parents[1] / "compiler" / "conftest.py")
_builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_builders)

F32 = np.float32
I64 = np.int64


def const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def function(nodes) -> onnx.FunctionProto:
    return helper.make_function(DOMAIN, OP_TYPE, ["X", "thresholds", "levels"], ["Y"], nodes,
                                [helper.make_opsetid("", STANDARD_OPSET)])


def flattened_prologue():
    """X as [B, C, R] (rank >= 2), tables as [C' (1 or C), 1, N]: the tables reshaped by the body itself."""
    return [
        const("neg1", np.array([-1], I64)), const("zero", np.array([0], I64)), const("two", np.array([2], I64)),
        const("one_n", np.array([1], I64)),
        helper.make_node("Shape", ["X"], ["xshape"]),
        helper.make_node("Slice", ["xshape", "zero", "two"], ["bc"]),
        helper.make_node("Concat", ["bc", "neg1"], ["x3shape"], axis=0),
        helper.make_node("Reshape", ["X", "x3shape"], ["x3"]),
        helper.make_node("Shape", ["thresholds"], ["tshape"]),
        helper.make_node("Slice", ["tshape", "neg1", "two"], ["n"]),
        helper.make_node("Concat", ["neg1", "one_n", "n"], ["t3shape"], axis=0),
        helper.make_node("Reshape", ["thresholds", "t3shape"], ["t3"]),
        helper.make_node("Shape", ["levels"], ["lshape"]),
        helper.make_node("Slice", ["lshape", "neg1", "two"], ["nl"]),
        helper.make_node("Concat", ["neg1", "one_n", "nl"], ["l3shape"], axis=0),
        helper.make_node("Reshape", ["levels", "l3shape"], ["l3"]),
    ]


def gather_body() -> onnx.FunctionProto:
    """k counted on the flattened view, levels picked with GatherElements."""
    return function(flattened_prologue() + [
        helper.make_node("Unsqueeze", ["x3", "neg1"], ["xu"]),
        helper.make_node("GreaterOrEqual", ["xu", "t3"], ["ge"]),
        helper.make_node("Cast", ["ge"], ["gei"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["gei", "neg1"], ["k"], keepdims=1),
        helper.make_node("Shape", ["x3"], ["x3s"]),
        helper.make_node("Concat", ["x3s", "nl"], ["fullshape"], axis=0),
        helper.make_node("Expand", ["l3", "fullshape"], ["lfull"]),
        helper.make_node("GatherElements", ["lfull", "k"], ["picked"], axis=-1),
        helper.make_node("Squeeze", ["picked", "neg1"], ["y3"]),
        helper.make_node("Reshape", ["y3", "xshape"], ["Y"]),
    ])


def where_chain_body(n: int) -> onnx.FunctionProto:
    """One Where per threshold, each comparison as Greater-or-Equal spelled Or(Greater, Equal): correct for
    models whose staircases all have `n` thresholds."""
    nodes = flattened_prologue()
    nodes += [const(f"j{j}", np.array(j, I64)) for j in range(n + 1)]
    nodes += [helper.make_node("Gather", ["l3", "j0"], ["lv0"], axis=-1),
              helper.make_node("Shape", ["x3"], ["x3s"]),
              helper.make_node("Expand", ["lv0", "x3s"], ["y_0"])]
    for j in range(n):
        nodes += [helper.make_node("Gather", ["t3", f"j{j}"], [f"t_{j}"], axis=-1),
                  helper.make_node("Gather", ["l3", f"j{j + 1}"], [f"lv_{j + 1}"], axis=-1),
                  helper.make_node("Greater", ["x3", f"t_{j}"], [f"gt_{j}"]),
                  helper.make_node("Equal", ["x3", f"t_{j}"], [f"eq_{j}"]),
                  helper.make_node("Or", [f"gt_{j}", f"eq_{j}"], [f"ge_{j}"]),
                  helper.make_node("Where", [f"ge_{j}", f"lv_{j + 1}", f"y_{j}"], [f"y_{j + 1}"])]
    nodes.append(helper.make_node("Reshape", [f"y_{n}", "xshape"], ["Y"]))
    return function(nodes)


def onehot_body() -> onnx.FunctionProto:
    """Thresholds on a new leading axis ([N, 1, C', 1, ...] for X of any rank >= 2, shaped from X's rank),
    k summed over it; the level picked by OneHot x levels summed (exact: one non-zero term)."""
    return function([
        const("neg1", np.array([-1], I64)), const("zero", np.array([0], I64)), const("one", np.array([1], I64)),
        const("two", np.array([2], I64)), const("one_v", np.array([1], I64)), const("onoff", np.array([0.0, 1.0], F32)),
        helper.make_node("Shape", ["X"], ["xshape"]),
        helper.make_node("Shape", ["xshape"], ["xrank"]),
        helper.make_node("Sub", ["xrank", "two"], ["nrest"]),
        helper.make_node("ConstantOfShape", ["nrest"], ["rest"], value=numpy_helper.from_array(np.array([1], I64))),
        helper.make_node("Shape", ["thresholds"], ["tshape"]),
        helper.make_node("Slice", ["tshape", "neg1", "two"], ["n"]),
        helper.make_node("Concat", ["neg1", "n"], ["t2shape"], axis=0),
        helper.make_node("Reshape", ["thresholds", "t2shape"], ["t2"]),             # [C', N]
        helper.make_node("Transpose", ["t2"], ["tn"], perm=[1, 0]),                # [N, C']
        helper.make_node("Shape", ["tn"], ["tns"]),
        helper.make_node("Concat", ["n", "one_v", "neg1", "rest"], ["tbshape"], axis=0),
        helper.make_node("Reshape", ["tn", "tbshape"], ["tb"]),                    # [N, 1, C', 1, ...]
        helper.make_node("Unsqueeze", ["X", "zero"], ["xu"]),
        helper.make_node("GreaterOrEqual", ["xu", "tb"], ["ge"]),
        helper.make_node("Cast", ["ge"], ["gei"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["gei", "zero"], ["k"], keepdims=0),           # X's shape
        helper.make_node("Shape", ["levels"], ["lshape"]),
        helper.make_node("Slice", ["lshape", "neg1", "two"], ["nl"]),
        helper.make_node("Concat", ["neg1", "nl"], ["l2shape"], axis=0),
        helper.make_node("Reshape", ["levels", "l2shape"], ["l2"]),                # [C', N+1]
        helper.make_node("Concat", ["neg1", "rest", "nl"], ["lbshape"], axis=0),
        helper.make_node("Reshape", ["l2", "lbshape"], ["lb"]),                    # [C', 1, ..., N+1]
        helper.make_node("Squeeze", ["nl"], ["depth"]),
        helper.make_node("OneHot", ["k", "depth", "onoff"], ["hot"], axis=-1),
        helper.make_node("Mul", ["hot", "lb"], ["terms"]),
        helper.make_node("ReduceSum", ["terms", "neg1"], ["Y"], keepdims=0),
    ])


def patvm_body_with(edit) -> onnx.FunctionProto:
    body = paquantize_function()
    edit(body)
    return body


def node_named(body, output):
    return next(node for node in body.node if node.output[0] == output)


def strict_greater(body):
    node_named(body, "ge").op_type = "Greater"


def nan_to_top_level(body):
    """k = #(not x < t): NaN compares false, so NaN counts every threshold and gives levels[N]."""
    node = node_named(body, "ge")
    node.op_type, node.output[0] = "Less", "lt"
    body.node.insert(list(body.node).index(node) + 1, helper.make_node("Not", ["lt"], ["ge"]))


def channels_on_last_axis(body):
    """Per-channel tables broadcast along the input's last axis instead of axis 1."""
    for output, order in (("tbshape", ["ones", "cdim", "tlast"]), ("lbshape", ["ones", "cdim", "llast"])):
        node = node_named(body, output)
        del node.input[:]
        node.input.extend(order)


CORRECT_BODIES = {"gather": gather_body, "where-chain": lambda: where_chain_body(4), "onehot": onehot_body}
WRONG_BODIES = {
    "strict >": (
        lambda: patvm_body_with(strict_greater),
        r"computes 0\.0 for input -0\.5, channel 0 .*definition gives 0\.25",
    ),
    "NaN -> top level": (
        lambda: patvm_body_with(nan_to_top_level),
        r"computes 2\.0 for input nan, channel 0 .*gives 0\.0",
    ),
    "wrong channel axis": (lambda: patvm_body_with(channels_on_last_axis), r"returns shape \[2, 5, \d+, 5\]"),
}


def with_function(model: onnx.ModelProto, body: onnx.FunctionProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.functions[:]
    copy.functions.append(body)
    return copy


def quantizer_model(rank: int, per_channel: bool, C: int = 5) -> onnx.ModelProto:
    t = np.array([-0.5, 0.0, 0.5, 1.0], F32)
    lv = np.array([0.0, 0.25, 0.5, 1.0, 2.0], F32)
    if per_channel:
        t, lv = (
            t[None, :] + np.arange(C, dtype=F32)[:, None] / 8,
            np.tile(lv, (C, 1)) + np.arange(C, dtype=F32)[:, None],
        )
    g = GraphWriter("quantizer")
    shape = [3, C, 4, 2][:rank]
    x = g.input("x", shape)
    g.output(g.pa_quantize(x, Staircase(t, lv)), shape)
    return g.model()


@pytest.mark.parametrize("body", sorted(CORRECT_BODIES))
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("rank", [2, 3, 4])
def test_correct_bodies_load_and_agree_with_the_definition(body, per_channel, rank):
    model = with_function(quantizer_model(rank, per_channel), CORRECT_BODIES[body]())
    load_model(model)
    rng = np.random.default_rng(rank)
    x = rng.uniform(-1.5, 2.5, [3, 5, 4, 2][:rank]).astype(F32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = ort.InferenceSession(quantizer_model(rank, per_channel).SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("body", sorted(WRONG_BODIES))
def test_wrong_bodies_are_refused_with_node_input_and_values(body):
    make, message = WRONG_BODIES[body]
    model = with_function(quantizer_model(4, per_channel=True), make())
    with pytest.raises(ModelError) as info:
        load_model(model)
    text = str(info.value)
    assert "\n" not in text
    assert re.search(r"PAQuantize node '[^']+': the model's ai\.patvm::PAQuantize function ", text), text
    assert re.search(message, text), text


def test_a_body_onnxruntime_cannot_run_is_refused():
    broken = patvm_body_with(lambda body: setattr(node_named(body, "k"), "op_type", "ReduceNothing"))
    with pytest.raises(ModelError, match="function does not run in onnxruntime on the nodes' tables"):
        load_model(with_function(quantizer_model(4, per_channel=False), broken))


def test_a_body_correct_only_for_other_staircases_is_refused():
    """The where-chain body for 2 thresholds on a model whose staircases have 4."""
    with pytest.raises(ModelError, match="definition gives"):
        load_model(with_function(quantizer_model(4, per_channel=False), where_chain_body(2)))


def test_probe_holds_thresholds_neighbours_midpoints_and_specials():
    t = np.array([-1.0, 0.5, 3.0], F32)
    values = channel_probe_values(t)
    for v in [*t, *np.nextafter(t, F32(np.inf)), *np.nextafter(t, F32(-np.inf)), -0.25, 1.75, np.inf, -np.inf]:
        assert v in values
    assert np.isnan(values).sum() == 1
    assert any(v == 0 and np.signbit(v) for v in values) and any(v == 0 and not np.signbit(v) for v in values)


@pytest.mark.parametrize("body", sorted(CORRECT_BODIES))
@pytest.mark.parametrize(
    "case",
    [
        dict(kind="conv"),
        dict(kind="conv", per_channel=True, C=5, O=7, H=8),
        dict(kind="dense", per_channel=True, C=33, O=10),
    ],
    ids=["conv", "conv-pc", "dense-pc"],
)
def test_models_with_another_writers_body_compile_and_match_onnxruntime(body, case):
    model, x = _builders.binary_layer_model(**case)
    model = with_function(model, CORRECT_BODIES[body]())
    compiled = patvm.compile(model, target="host", tuning_db=False, strategy="bit-serial")
    assert [layer["strategy"] for layer in compiled.layers] == ["bit-serial"]
    np.testing.assert_array_equal(compiled.run(x)[0], _builders.onnxruntime_run(model, {"x": x})[0])
