"""`load_model` refuses every hostile input with a one-line ModelError naming the file and the problem."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import patvm.onnx_format.model_contents as model_contents
import patvm.onnx_format.validate as validate
from patvm.approx import Staircase
from patvm.errors import ModelError
from patvm.onnx_format import DOMAIN, GraphWriter, save_model
from patvm.onnx_format.validate import load_model

F32 = np.float32


# ---------------------------------------------------------------------------------------------- builders
def quantizer_model(thresholds=(0.0, 1.0), levels=(0.0, 0.5, 2.0)) -> onnx.ModelProto:
    g = GraphWriter("quantizer")
    x = g.input("x", [1, 3, 4, 4])
    y = g.pa_quantize(x, Staircase(np.array(thresholds, F32), np.array(levels, F32)))
    y = g.conv(y, np.arange(2 * 3 * 3 * 3, dtype=F32).reshape(2, 3, 3, 3) / 64, pad=1)
    g.output(y, [1, 2, 4, 4])
    return g.model()


def relu_model(opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def matmul_model(n: int = 64) -> onnx.ModelProto:
    g = GraphWriter("matmul")
    x = g.input("x", [1, n])
    g.output(g.matmul(x, np.arange(n * n, dtype=F32).reshape(n, n) / n), [1, n])
    return g.model()


def write(path, model_or_bytes) -> str:
    data = model_or_bytes if isinstance(model_or_bytes, bytes) else model_or_bytes.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def paq_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.domain == DOMAIN)


def initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def replace_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    initializer(model, name).CopyFrom(numpy_helper.from_array(array, name))


def refused(target, match: str) -> str:
    """Load `target`, expect a one-line ModelError matching `match` that names the file; return it."""
    with pytest.raises(ModelError) as info:
        load_model(target)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert re.search(match, message), message
    if isinstance(target, (str, os.PathLike)):
        assert message.startswith(validate.one_line(str(target), validate.PATH_LIMIT) + ": "), message
    return message


def refused_file(tmp_path, model_or_bytes, match: str, name: str = "model.onnx") -> str:
    return refused(write(tmp_path / name, model_or_bytes), match)


# ---------------------------------------------------------------------------------------------- good models
def test_good_model_loads_from_file(tmp_path):
    model = quantizer_model()
    path = tmp_path / "good.onnx"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded, onnx.ModelProto) and loaded == model
    assert load_model(str(path)) == model


def test_good_model_loads_from_memory_without_being_changed():
    model = quantizer_model()
    before = model.SerializeToString()
    assert load_model(model) == model
    assert model.SerializeToString() == before


@pytest.mark.parametrize("per_channel", [False, True])
def test_per_channel_and_abc_tables_load(tmp_path, per_channel):
    g = GraphWriter("abc")
    x = g.input("x", [1, 2, 3])
    t = np.array([[-1.0, 0.5], [0.0, 2.0]], F32) if per_channel else np.array([-1.0, 0.5], F32)
    lv = np.array([[-3.0, -1.0, 3.0]] * 2, F32) if per_channel else np.array([-3.0, -1.0, 3.0], F32)
    g.output(g.pa_quantize(x, Staircase(t, lv)), [1, 2, 3])
    assert load_model(write(tmp_path / "abc.onnx", g.model())) == g.model()


def test_model_without_patvm_nodes_loads(tmp_path):
    assert load_model(write(tmp_path / "relu.onnx", relu_model())) == relu_model()


# ---------------------------------------------------------------------------------------------- file level
def test_missing_path(tmp_path):
    refused(tmp_path / "nope.onnx", "no such file")


def test_directory(tmp_path):
    refused(tmp_path, "is a directory")


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    refused(fifo, "not a regular file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_unreadable_file(tmp_path):
    path = write(tmp_path / "secret.onnx", quantizer_model())
    os.chmod(path, 0)
    refused(path, "Permission denied")


def test_read_error_is_reported(tmp_path, monkeypatch):
    path = write(tmp_path / "model.onnx", quantizer_model())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(validate, "open", denied, raising=False)
    refused(path, "cannot read the file: Permission denied")


def test_empty_file(tmp_path):
    refused_file(tmp_path, b"", "file is empty")


def test_random_bytes(tmp_path):
    refused_file(tmp_path, np.random.default_rng(0).bytes(4096), "not an ONNX protobuf file")


def test_invalid_wire_type(tmp_path):
    refused_file(tmp_path, b"\xff" * 64, "not an ONNX protobuf file")


def test_text_file(tmp_path):
    refused_file(tmp_path, b"ir_version: 8\ngraph { node { op_type: 'Relu' } }\n", "not an ONNX protobuf file",
                 name="model.txt")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_protobuf(tmp_path, keep):
    data = quantizer_model().SerializeToString()
    refused_file(tmp_path, data[: int(len(data) * keep)], "not an ONNX protobuf file")


def deeply_nested_graph_bytes(depth: int) -> bytes:
    """A ModelProto whose graph nests If-subgraphs `depth` deep: graph{node{attribute{g{node{...}}}}}."""
    def field(number: int, payload: bytes) -> bytes:
        length, n = b"", len(payload)
        while True:
            length += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                break
        return bytes([number << 3 | 2]) + length + payload

    graph = b""
    for _ in range(depth):
        attribute = field(1, b"then_branch") + field(6, graph)   # AttributeProto.name, .g
        graph = field(1, field(4, b"If") + field(5, attribute))  # GraphProto.node{op_type, attribute}
    return b"\x08\x08" + field(7, graph)                         # ir_version 8, ModelProto.graph


def test_deeply_nested_protobuf(tmp_path):
    refused_file(tmp_path, deeply_nested_graph_bytes(200), "not an ONNX protobuf file")


def test_protobuf_without_graph(tmp_path):
    refused_file(tmp_path, onnx.ModelProto(ir_version=8, producer_name="x").SerializeToString(), "has no graph")


def test_model_proto_without_graph_in_memory():
    refused(onnx.ModelProto(ir_version=8), "has no graph")


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate(validate.MAX_FILE_BYTES + 1)   # sparse: no disk space used

    def never(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(validate, "open", never, raising=False)
    refused(path, "over the 2147483648 byte limit")


def test_path_with_nul_character(tmp_path):
    with pytest.raises(ModelError, match="NUL"):
        load_model(str(tmp_path / "a\0b.onnx"))


@pytest.mark.parametrize("thing", [42, None, b"bytes", ["model.onnx"]])
def test_neither_path_nor_model(thing):
    with pytest.raises(ModelError, match="expected a model path or an onnx.ModelProto"):
        load_model(thing)


def test_hostile_path_characters_stay_on_one_line(tmp_path):
    refused(str(tmp_path / "a\nb\rc.onnx"), "no such file")


# ---------------------------------------------------------------------------------------------- opsets
@pytest.mark.parametrize("version", [1, 12])
def test_default_opset_too_old(tmp_path, version):
    refused_file(tmp_path, relu_model(version), f"default-domain opset {version} is unsupported")


def test_default_opset_newer_than_onnx(tmp_path):
    too_new = onnx.defs.onnx_opset_version() + 1
    refused_file(tmp_path, relu_model(too_new), f"opset {too_new} is unsupported")


def test_no_default_opset(tmp_path):
    model = relu_model()
    model.opset_import[0].domain = "com.example"
    refused_file(tmp_path, model, "no default-domain")


def test_default_domain_imported_twice(tmp_path):
    model = relu_model()
    model.opset_import.append(helper.make_opsetid("ai.onnx", 17))
    refused_file(tmp_path, model, "imports the default domain twice")


@pytest.mark.parametrize("version", [0, 2, 99])
def test_patvm_opset_other_than_1(tmp_path, version):
    model = quantizer_model()
    next(o for o in model.opset_import if o.domain == DOMAIN).version = version
    refused_file(tmp_path, model, f"ai.patvm opset {version}, patvm knows only version 1")


def test_patvm_opset_other_than_1_inside_a_function(tmp_path):
    model = quantizer_model()
    model.functions[0].opset_import.append(helper.make_opsetid(DOMAIN, 2))
    refused_file(tmp_path, model, "function 'ai.patvm::PAQuantize' imports ai.patvm opset 2")


# ---------------------------------------------------------------------------------------------- checker, structure
def test_checker_failure_reports_its_first_line(tmp_path):
    model = relu_model()
    model.graph.node[0].op_type = "NoSuchOp"
    refused_file(tmp_path, model, r"fails the ONNX checker: .*NoSuchOp")


def test_checker_failure_on_a_type_error(tmp_path):
    model = relu_model()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.STRING
    refused_file(tmp_path, model, "fails the ONNX checker")


def test_graph_with_a_cycle(tmp_path):
    nodes = [helper.make_node("Add", ["x", "z"], ["y"], name="A"), helper.make_node("Relu", ["y"], ["z"], name="B")]
    graph = helper.make_graph(nodes, "loop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    message = refused_file(tmp_path, model, "graph 'loop' has a cycle through nodes")
    assert "'A'" in message and "'B'" in message


def test_self_loop_node(tmp_path):
    model = relu_model()
    model.graph.node[0].input[0] = "y"
    refused_file(tmp_path, model, "has a cycle through nodes 'relu'")


def test_unsorted_but_acyclic_graph_goes_to_the_checker(tmp_path):
    model = relu_model()
    model.graph.node[0].output[0] = "h"
    model.graph.node.append(helper.make_node("Relu", ["h"], ["y"], name="second"))
    model.graph.node.reverse()
    refused_file(tmp_path, model, "fails the ONNX checker: .*topologically sorted")


def test_cycle_inside_a_subgraph(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Relu", ["b"], ["a"], name="P"), helper.make_node("Relu", ["a"], ["b"], name="Q")],
        "body",
        [],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])],
    )
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=body, else_branch=body)
    graph = helper.make_graph([node], "outer", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    refused_file(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                 "subgraph 'body' of node 'branch' has a cycle")


def recursive_function_model() -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)]
    f = helper.make_function(
        "custom", "F", ["a"], ["b"], [helper.make_node("G", ["a"], ["b"], domain="custom")], opsets
    )
    g = helper.make_function(
        "custom", "G", ["a"], ["b"], [helper.make_node("F", ["a"], ["b"], domain="custom")], opsets
    )
    graph = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="custom", name="call")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=opsets, functions=[f, g])


def test_recursive_functions(tmp_path):
    refused_file(tmp_path, recursive_function_model(), "model-local function 'custom::[FG]' calls itself")


@pytest.mark.parametrize("ir_version", [0, onnx.IR_VERSION + 5])
def test_bad_ir_version_goes_to_the_checker(tmp_path, ir_version):
    model = relu_model()
    model.ir_version = ir_version
    refused_file(tmp_path, model, "fails the ONNX checker: .*ir_version|fails the ONNX checker: .*IR version")


# ---------------------------------------------------------------------------------------------- tensors
def test_raw_data_shorter_than_the_shape(tmp_path):
    model = quantizer_model()
    w = initializer(model, "conv_w_0")
    w.raw_data = w.raw_data[:-4]
    refused_file(tmp_path, model, r"initializer 'conv_w_0' holds 212 bytes of raw data, .* needs 216")


def test_raw_data_longer_than_the_shape(tmp_path):
    model = quantizer_model()
    w = initializer(model, "conv_w_0")
    w.raw_data = w.raw_data + b"\0" * 8
    refused_file(tmp_path, model, "initializer 'conv_w_0' holds 224 bytes")


def test_typed_data_count_mismatch(tmp_path):
    model = quantizer_model()
    w = initializer(model, "conv_w_0")
    w.ClearField("raw_data")
    w.float_data.extend([0.5] * 50)
    refused_file(tmp_path, model, "initializer 'conv_w_0' holds 50 values, .* needs 54")


def test_tensor_without_data(tmp_path):
    model = quantizer_model()
    initializer(model, "conv_w_0").ClearField("raw_data")
    refused_file(tmp_path, model, "initializer 'conv_w_0' holds 0 values")


def test_negative_initializer_dim(tmp_path):
    model = quantizer_model()
    initializer(model, "conv_w_0").dims[0] = -2
    refused_file(tmp_path, model, "initializer 'conv_w_0' declares a negative dimension")


def test_absurd_initializer_element_count(tmp_path):
    model = quantizer_model()
    w = initializer(model, "conv_w_0")
    del w.dims[:]
    w.dims.extend([2**20, 2**20, 3, 3])
    refused_file(tmp_path, model, "initializer 'conv_w_0' declares 9895604649984 elements, over the limit of 2..31")


def test_absurd_sparse_initializer_dense_shape(tmp_path):
    model = relu_model()
    values = numpy_helper.from_array(np.ones(1, F32), "s")
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "s_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [2**40]))
    refused_file(tmp_path, model, "sparse initializer 's' declares 1099511627776 elements")


def test_unknown_data_type(tmp_path):
    model = quantizer_model()
    initializer(model, "conv_w_0").data_type = 999
    refused_file(tmp_path, model, "initializer 'conv_w_0' has an unknown data type #999")


def test_constant_node_tensor_is_checked(tmp_path):
    model = relu_model()
    const = helper.make_node("Constant", [], ["c"], name="k", value=numpy_helper.from_array(np.ones(4, F32), "c"))
    const.attribute[0].t.raw_data = b"\0" * 3
    model.graph.node.insert(0, const)
    refused_file(tmp_path, model, "tensor in attribute 'value' of node 'k' holds 3 bytes")


@pytest.mark.parametrize("dims,match", [([-1, 3], "negative dimension"), ([2**16, 2**16, 2], "over the limit")])
def test_absurd_graph_input_dims(tmp_path, dims, match):
    model = relu_model()
    shape = model.graph.input[0].type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        shape.dim.add().dim_value = d
    refused_file(tmp_path, model, f"graph input 'x' declares .*{match}")


def test_symbolic_graph_input_dims_are_fine(tmp_path):
    model = relu_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    load_model(write(tmp_path / "m.onnx", model))


# ---------------------------------------------------------------------------------------------- external data
def external_model(folder, location: str = "weights.bin") -> str:
    """matmul_model saved with its weight in `location`; returns the model path."""
    os.makedirs(os.path.join(folder, os.path.dirname(location)), exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    onnx.save_model(matmul_model(), path, save_as_external_data=True, location=location, size_threshold=0)
    return path


def external_entries(path: str) -> tuple[onnx.ModelProto, onnx.TensorProto]:
    model = onnx.load(path, load_external_data=False)
    return model, next(t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL)


def set_entry(tensor: onnx.TensorProto, key: str, value: str) -> None:
    for entry in tensor.external_data:
        if entry.key == key:
            entry.value = value
            return
    tensor.external_data.add(key=key, value=value)


def rewritten(path: str, **entries) -> str:
    model, tensor = external_entries(path)
    for key, value in entries.items():
        set_entry(tensor, key, value)
    return write(path, model)


def same_weights(loaded: onnx.ModelProto, expected: onnx.ModelProto) -> bool:
    assert not any(t.data_location == TensorProto.EXTERNAL or t.external_data for t in loaded.graph.initializer)
    arrays = lambda m: [(t.name, numpy_helper.to_array(t).tobytes()) for t in m.graph.initializer]  # noqa: E731
    return arrays(loaded) == arrays(expected) and list(loaded.graph.node) == list(expected.graph.node)


def test_external_data_inside_the_folder_loads(tmp_path):
    assert same_weights(load_model(external_model(tmp_path / "m")), matmul_model())


def test_external_data_in_a_subfolder_loads(tmp_path):
    assert same_weights(load_model(external_model(tmp_path / "m", "data/w.bin")), matmul_model())


def test_external_data_at_an_offset_loads(tmp_path):
    path = external_model(tmp_path / "m")
    data = (tmp_path / "m" / "weights.bin").read_bytes()
    (tmp_path / "m" / "weights.bin").write_bytes(b"\0" * 64 + data + b"\0" * 64)
    assert same_weights(load_model(rewritten(path, offset="64", length=str(len(data)))), matmul_model())


def test_in_memory_model_with_external_data_needs_a_folder(tmp_path):
    path = external_model(tmp_path / "m")
    model = onnx.load(path, load_external_data=False)
    refused(model, "given in memory without a folder")
    assert same_weights(load_model(model, base_dir=tmp_path / "m"), matmul_model())


def never_loaded(monkeypatch):
    def loader(*args, **kwargs):
        raise AssertionError("external data was read")
    monkeypatch.setattr(model_contents, "load_external_data_for_tensor", loader)


def secret_beside(folder) -> str:
    secret = os.path.join(os.path.dirname(folder), "secret.bin")
    with open(secret, "wb") as f:
        f.write(b"TOP-SECRET" * 4096)
    return secret


def test_dotdot_escape_is_refused_and_the_secret_never_read(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    path = external_model(folder)
    secret_beside(folder)
    rewritten(path, location="../secret.bin")
    never_loaded(monkeypatch)
    message = refused(path, "external data location '../secret.bin' escaping the model's folder")
    assert "TOP-SECRET" not in message


def test_dotdot_through_a_subfolder_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    path = external_model(folder)
    secret_beside(folder)
    os.makedirs(folder / "sub")
    rewritten(path, location="sub/../../secret.bin")
    never_loaded(monkeypatch)
    refused(path, "escaping the model's folder")


def test_absolute_location_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    path = external_model(folder)
    rewritten(path, location=secret_beside(folder))
    never_loaded(monkeypatch)
    refused(path, "absolute external data location")


def test_symlink_escape_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    path = external_model(folder)
    os.symlink(secret_beside(folder), folder / "link.bin")
    rewritten(path, location="link.bin")
    never_loaded(monkeypatch)
    refused(path, "location 'link.bin' escaping the model's folder")


def test_symlinked_folder_escape_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    path = external_model(folder)
    secret_beside(folder)
    os.symlink(tmp_path, folder / "up")
    rewritten(path, location="up/secret.bin")
    never_loaded(monkeypatch)
    refused(path, "escaping the model's folder")


def test_location_naming_the_folder_itself_is_refused(tmp_path):
    path = external_model(tmp_path / "m")
    rewritten(path, location=".")
    refused(path, "escaping the model's folder")


def test_missing_external_file(tmp_path):
    path = external_model(tmp_path / "m")
    os.unlink(tmp_path / "m" / "weights.bin")
    refused(path, "external data file 'weights.bin', which does not exist")


def test_external_file_too_short(tmp_path):
    path = external_model(tmp_path / "m")
    with open(tmp_path / "m" / "weights.bin", "r+b") as f:
        f.truncate(100)
    refused(path, r"needs bytes 0\.\.16384 of 'weights.bin', which has only 100")


def test_external_offset_past_the_end(tmp_path):
    path = external_model(tmp_path / "m")
    rewritten(path, offset="4096")
    refused(path, r"needs bytes 4096\.\.20480")


@pytest.mark.parametrize("key,value,match", [
    ("offset", "-1", "negative external data offset"),
    ("offset", "lots", "offset 'lots', not an integer"),
    ("length", "12", "external data length 12, .* needs 16384"),
    ("length", "99999999999999", "external data length"),
])
def test_bad_external_offsets_and_lengths(tmp_path, key, value, match):
    path = external_model(tmp_path / "m")
    refused(rewritten(path, **{key: value}), match)


def test_unknown_external_key(tmp_path):
    path = external_model(tmp_path / "m")
    refused(rewritten(path, evil="1"), "unknown external data key 'evil'")


def test_empty_location(tmp_path):
    path = external_model(tmp_path / "m")
    refused(rewritten(path, location=""), "without a location")


def test_external_location_that_is_a_fifo(tmp_path):
    path = external_model(tmp_path / "m")
    os.mkfifo(tmp_path / "m" / "pipe")
    refused(rewritten(path, location="pipe"), "'pipe', which is not a regular file")


def test_external_location_that_is_a_directory(tmp_path):
    path = external_model(tmp_path / "m")
    os.makedirs(tmp_path / "m" / "d")
    refused(rewritten(path, location="d"), "'d', which is not a regular file")


def test_external_data_on_an_absurd_shape_is_refused_before_reading(tmp_path, monkeypatch):
    path = external_model(tmp_path / "m")
    model, tensor = external_entries(path)
    del tensor.dims[:]
    tensor.dims.extend([2**31, 2])
    write(path, model)
    never_loaded(monkeypatch)
    refused(path, "declares 4294967296 elements")


def test_external_data_over_the_total_limit(tmp_path, monkeypatch):
    path = external_model(tmp_path / "m")
    monkeypatch.setattr(model_contents, "MAX_FILE_BYTES", 1000)   # the external data total
    never_loaded(monkeypatch)
    refused(path, "external data totals 16384 bytes, over the 1000 byte limit")


def test_symlink_inside_the_folder_is_refused_by_onnx(tmp_path):
    folder = tmp_path / "m"
    path = external_model(folder)
    os.rename(folder / "weights.bin", folder / "real.bin")
    os.symlink("real.bin", folder / "weights.bin")
    refused(path, "location 'weights.bin', a symbolic link")


# ---------------------------------------------------------------------------------------------- ai.patvm
def test_thresholds_from_a_graph_input(tmp_path):
    model = quantizer_model()
    node = paq_node(model)
    model.graph.input.append(helper.make_tensor_value_info("t_in", TensorProto.FLOAT, [2]))
    node.input[1] = "t_in"
    refused_file(tmp_path, model, r"PAQuantize node 'paq_0': thresholds 't_in' must be an initializer")


def test_levels_from_a_constant_node(tmp_path):
    model = quantizer_model()
    const = helper.make_node("Constant", [], ["lv"], name="lv", value=numpy_helper.from_array(np.zeros(3, F32), "lv"))
    model.graph.node.insert(0, const)
    paq_node(model).input[2] = "lv"
    refused_file(tmp_path, model, "levels 'lv' must be an initializer")


def test_thresholds_overridable_as_graph_input(tmp_path):
    model = quantizer_model()
    t = paq_node(model).input[1]
    model.graph.input.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, [2]))
    refused_file(tmp_path, model, f"thresholds '{t}' are also a graph input")


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64])
def test_tables_not_float32(tmp_path, dtype):
    model = quantizer_model()
    name = paq_node(model).input[1]
    replace_initializer(model, name, np.array([0, 1], dtype))
    refused_file(tmp_path, model, "PAQuantize node 'paq_0': thresholds must be float32, got")


def test_levels_not_float32(tmp_path):
    model = quantizer_model()
    replace_initializer(model, paq_node(model).input[2], np.array([0, 1, 2], np.float64))
    refused_file(tmp_path, model, "levels must be float32, got DOUBLE")


@pytest.mark.parametrize("levels,match", [
    (np.zeros(2, F32), r"levels must have shape \[3\]"),
    (np.zeros((2, 3), F32), r"levels must have shape \[3\]"),
])
def test_levels_of_the_wrong_shape(tmp_path, levels, match):
    model = quantizer_model()
    replace_initializer(model, paq_node(model).input[2], levels)
    refused_file(tmp_path, model, "PAQuantize node 'paq_0': " + match)


@pytest.mark.parametrize("thresholds", [np.zeros((0,), F32), np.zeros((1, 1, 2), F32), np.float32(0.5)])
def test_thresholds_of_the_wrong_shape(tmp_path, thresholds):
    model = quantizer_model()
    replace_initializer(model, paq_node(model).input[1], np.asarray(thresholds))
    refused_file(tmp_path, model, "PAQuantize node 'paq_0': thresholds must have shape")


@pytest.mark.parametrize("thresholds", [[1.0, 1.0], [1.0, 0.0]])
def test_non_increasing_thresholds(tmp_path, thresholds):
    model = quantizer_model()
    replace_initializer(model, paq_node(model).input[1], np.array(thresholds, F32))
    refused_file(tmp_path, model, "PAQuantize node 'paq_0': thresholds must be strictly increasing")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which,match", [(1, "thresholds contain NaN or infinity"), (2, "levels .*contain NaN")])
def test_non_finite_tables(tmp_path, bad, which, match):
    model = quantizer_model()
    name = paq_node(model).input[which]
    table = numpy_helper.to_array(initializer(model, name)).copy()
    table[-1] = bad
    replace_initializer(model, name, table)
    refused_file(tmp_path, model, f"PAQuantize node 'paq_0': {match}")


def test_node_name_with_newline_stays_on_one_line(tmp_path):
    model = quantizer_model()
    paq_node(model).name = "evil\nname"
    replace_initializer(model, paq_node(model).input[1], np.array([1.0, 0.0], F32))
    refused_file(tmp_path, model, r"PAQuantize node 'evil\\nname'")


def test_duplicate_threshold_initializer(tmp_path):
    model = quantizer_model()
    name = paq_node(model).input[1]
    model.graph.initializer.append(numpy_helper.from_array(np.array([5.0, 6.0], F32), name))
    refused_file(tmp_path, model, f"fails the ONNX checker: {name} initializer name is not unique")


def test_node_output_shadowing_the_thresholds(tmp_path):
    model = quantizer_model()
    name = paq_node(model).input[1]
    model.graph.node.insert(0, helper.make_node("Relu", ["x"], [name], name="shadow"))
    refused_file(tmp_path, model, f"fails the ONNX checker: .*'{name}' has been used as output names multiple times")


def test_unknown_patvm_op(tmp_path):
    model = quantizer_model()
    paq_node(model).op_type = "PAExplode"
    refused_file(tmp_path, model, "unknown op ai.patvm::PAExplode")


def test_tampered_paquantize_function(tmp_path):
    model = quantizer_model()
    body = model.functions[0]
    body.node[-1].op_type = "ReduceMin"   # onnxruntime would now compute something else than patvm
    refused_file(tmp_path, model, r"PAQuantize node '\w+': the model's ai.patvm::PAQuantize function computes -inf "
                                  r"for input .* where the format's definition gives")


def test_foreign_function_in_the_patvm_domain(tmp_path):
    model = quantizer_model()
    extra = onnx.FunctionProto()
    extra.CopyFrom(model.functions[0])
    extra.name = "Other"
    model.functions.append(extra)
    refused_file(tmp_path, model, "function 'ai.patvm::Other' is not a patvm op")


def test_paquantize_inside_a_function(tmp_path):
    model = quantizer_model()
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    wrapper = helper.make_function("custom", "Wrap", ["a", "t", "l"], ["b"],
                                   [helper.make_node("PAQuantize", ["a", "t", "l"], ["b"], domain=DOMAIN)], opsets)
    model.functions.append(wrapper)
    node = paq_node(model)
    node.op_type, node.domain = "Wrap", "custom"
    model.opset_import.append(helper.make_opsetid("custom", 1))
    refused_file(tmp_path, model, "uses ai.patvm::PAQuantize inside a function")


def test_paquantize_in_a_subgraph_is_checked(tmp_path):
    inner = quantizer_model()
    replace_initializer(inner, paq_node(inner).input[1], np.array([1.0, 0.0], F32))
    body = helper.make_graph(
        [paq_node(inner)],
        "body",
        [],
        [helper.make_tensor_value_info(paq_node(inner).output[0], TensorProto.FLOAT, [1, 3, 4, 4])],
        [initializer(inner, paq_node(inner).input[1]), initializer(inner, paq_node(inner).input[2])],
    )
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=body, else_branch=body)
    graph = helper.make_graph([node], "outer", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                                helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    model = helper.make_model(graph, opset_imports=list(inner.opset_import), functions=list(inner.functions))
    refused_file(tmp_path, model, "thresholds must be strictly increasing")


def test_wrong_input_count(tmp_path):
    model = quantizer_model()
    paq_node(model).input.append("x")
    refused_file(tmp_path, model, "PAQuantize node 'paq_0' needs 3 inputs|fails the ONNX checker")


# ---------------------------------------------------------------------------------------------- subprocess
HOSTILE_FILES = {
    "truncated": lambda: quantizer_model().SerializeToString()[:300],
    "random": lambda: np.random.default_rng(1).bytes(2048),
    "text": lambda: b"this is not a model\n" * 10,
    "nested": lambda: deeply_nested_graph_bytes(500),
    "cycle": lambda: relu_cycle_bytes(),
    "recursive": lambda: recursive_function_model().SerializeToString(),
    "absurd-dims": lambda: absurd_dims_bytes(),
}


def relu_cycle_bytes() -> bytes:
    model = relu_model()
    model.graph.node[0].input[0] = "y"
    return model.SerializeToString()


def absurd_dims_bytes() -> bytes:
    model = quantizer_model()
    w = initializer(model, "conv_w_0")
    del w.dims[:]
    w.dims.extend([2**40, 2**40])
    return model.SerializeToString()


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_file_in_a_subprocess_raises_not_crashes(tmp_path, case):
    path = write(tmp_path / f"{case}.onnx", HOSTILE_FILES[case]())
    code = textwrap.dedent(f"""
        import sys
        from patvm.errors import ModelError
        from patvm.onnx_format.validate import load_model
        try:
            load_model({path!r})
        except ModelError as exc:
            print("ModelError:", exc)
            sys.exit(3)
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr[-500:]}"
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert result.stdout.startswith(f"ModelError: {path}: ")
