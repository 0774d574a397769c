"""The model zoo: every model builds, passes the checker, runs in onnxruntime with sane logits, and has the
PA paper's layer layout (first conv and FC fp32, binary layers behind PAQuantize, shared block quantizer)."""
import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from patvm import cli, zoo
from patvm.approx import approximate_weights_pa
from patvm.errors import PatvmError
from patvm.onnx_format import is_paquantize

SIZE = 32
BATCH = 2
M, N = 4, 5
BINARY_NAMES = [n for n in zoo.ZOO_NAMES if n.startswith(("pa-", "abc-"))]
TWIN_NAMES = [n for n in zoo.ZOO_NAMES if n not in BINARY_NAMES]


@functools.cache
def built(name: str, seed: int = 0) -> onnx.ModelProto:
    return zoo.build_model(name, M=M, N=N, seed=seed, batch=BATCH, image_size=SIZE)


def initializers(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def consumers(model):
    out = {}
    for node in model.graph.node:
        for value in node.input:
            out.setdefault(value, []).append(node)
    return out


def quantized_convs(model):
    """Conv nodes whose data input is a PAQuantize output."""
    quantized = {n.output[0] for n in model.graph.node if is_paquantize(n)}
    return [n for n in model.graph.node if n.op_type == "Conv" and n.input[0] in quantized]


def attr(node, name):
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def test_names():
    assert {"pa-resnet18", "pa-resnet34", "pa-resnet50", "pa-mobilenet-v1", "pa-densenet121", "abc-resnet18",
            "resnet18", "resnet34", "resnet50", "mobilenet-v1", "densenet121"} <= set(zoo.ZOO_NAMES)
    assert zoo.twin_of("pa-resnet18") == "resnet18"
    assert zoo.twin_of("abc-mobilenet-v1") == "mobilenet-v1"
    assert zoo.twin_of("densenet121") == "densenet121"
    with pytest.raises(PatvmError, match="unknown zoo model"):
        zoo.twin_of("pa-vgg16")


@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_builds_checks_and_runs_in_onnxruntime(name):
    model = built(name)
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [BATCH, 3, SIZE, SIZE]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).standard_normal((BATCH, 3, SIZE, SIZE), dtype=np.float32)
    logits = session.run(None, {"input": x})[0]
    assert logits.shape == (BATCH, 1000)
    assert np.all(np.isfinite(logits))
    assert np.all(logits.std(axis=1) > 0.1), "logits are (nearly) constant over the classes"
    assert np.abs(logits[0] - logits[1]).max() > 0.1, "two different images give the same logits"
    assert np.abs(logits).max() < 1e3, "activations exploded"


@pytest.mark.parametrize("name", BINARY_NAMES)
def test_binary_layers_have_few_weight_values_and_first_and_last_layers_are_fp32(name):
    model = built(name)
    weights = initializers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    binary = quantized_convs(model)
    assert binary, "no binary convs"
    most = M + 1 if name.startswith("pa-") else 2 ** M
    for node in binary:
        assert len(np.unique(weights[node.input[1]])) <= most, node.name
    first = convs[0]
    assert first.input[0] == "input" and first not in binary
    assert len(np.unique(weights[first.input[1]])) > 100
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 1 and gemms[0].input[0] not in {n.output[0] for n in model.graph.node if is_paquantize(n)}
    assert len(np.unique(weights[gemms[0].input[1]])) > 1000
    fp_convs = [n for n in convs if n not in binary]
    if "mobilenet" in name:   # depthwise convs stay full precision, pointwise are binary
        assert all(attr(n, "group") > 1 for n in fp_convs[1:]) and len(binary) == 13
        assert all(attr(n, "kernel_shape") == [1, 1] for n in binary)
    else:                     # ResNet / DenseNet: every conv but the first is binary
        assert fp_convs == [first]


@pytest.mark.parametrize("name,binary_convs", [("pa-resnet18", 19), ("pa-resnet34", 35), ("pa-resnet50", 52),
                                               ("pa-densenet121", 2 * 58 + 3)])
def test_binary_conv_counts(name, binary_convs):
    assert len(quantized_convs(built(name))) == binary_convs


@pytest.mark.parametrize("name,downsampling", [("pa-resnet18", 3), ("abc-resnet34", 3), ("pa-resnet50", 4)])
def test_block_input_quantizer_feeds_the_conv_and_the_downsampling_conv(name, downsampling):
    model = built(name)
    uses = consumers(model)
    shared = [n for n in model.graph.node if is_paquantize(n) and len(uses[n.output[0]]) > 1]
    assert len(shared) == downsampling
    for q in shared:
        convs = uses[q.output[0]]
        assert [c.op_type for c in convs] == ["Conv", "Conv"]
        assert attr(convs[1], "kernel_shape") == [1, 1] and attr(convs[1], "strides") == attr(convs[0], "strides")
    for q in (n for n in model.graph.node if is_paquantize(n)):   # every quantizer feeds convs only
        assert all(c.op_type == "Conv" for c in uses[q.output[0]])


def test_resnet_basic_block_order():
    """x -> PAQuantize -> Conv -> BN -> ReLU -> PAQuantize -> Conv -> BN -> Add -> ReLU (PA-style)."""
    ops = [n.op_type for n in built("pa-resnet18").graph.node]
    block = ["PAQuantize", "Conv", "BatchNormalization", "Relu", "PAQuantize", "Conv", "BatchNormalization",
             "Add", "Relu"]
    assert ops[4:4 + len(block)] == block


def test_quantizer_levels_pa_zero_bottom_abc_nonzero_bottom():
    for name, zero_bottom in (("pa-resnet18", True), ("abc-resnet18", False)):
        model = built(name)
        weights = initializers(model)
        for q in (n for n in model.graph.node if is_paquantize(n)):
            thresholds, levels = weights[q.input[1]], weights[q.input[2]]
            assert thresholds.shape == (N,) and levels.shape == (N + 1,)
            assert np.all(np.diff(thresholds) > 0) and np.all(np.diff(levels) > 0)
            assert (levels[0] == 0) == zero_bottom


def test_twin_has_no_quantizers_and_the_weights_pa_approximates():
    twin, pa = built("resnet18"), built("pa-resnet18")
    assert not any(is_paquantize(n) for n in twin.graph.node) and not twin.functions
    tw, pw = initializers(twin), initializers(pa)
    twin_convs = [n for n in twin.graph.node if n.op_type == "Conv"]
    pa_convs = [n for n in pa.graph.node if n.op_type == "Conv"]
    assert np.array_equal(tw[twin_convs[0].input[1]], pw[pa_convs[0].input[1]])
    for t, p in zip(twin_convs[1:], pa_convs[1:]):
        expected = approximate_weights_pa(tw[t.input[1]], M).w_bar
        assert np.array_equal(expected, pw[p.input[1]])


def test_seed_determines_the_model():
    again = zoo.build_model("pa-mobilenet-v1", M=M, N=N, seed=0, batch=BATCH, image_size=SIZE)
    assert again.SerializeToString() == built("pa-mobilenet-v1").SerializeToString()
    other = built("pa-mobilenet-v1", seed=1)
    assert initializers(other)["conv_w_0"].tolist() != initializers(again)["conv_w_0"].tolist()


def test_m_and_n_shape_the_binary_layers():
    model = zoo.build_model("pa-resnet18", M=2, N=3, image_size=SIZE)
    weights = initializers(model)
    assert all(len(np.unique(weights[c.input[1]])) <= 3 for c in quantized_convs(model))
    assert all(weights[q.input[1]].shape == (3,) for q in model.graph.node if is_paquantize(q))


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="vgg16"), "unknown zoo model 'vgg16'; known: pa-resnet18"),
    (dict(name="pa-resnet18", M=3), "even number of weight pieces"),
    (dict(name="pa-resnet18", M=0), "even number of weight pieces"),
    (dict(name="pa-resnet18", N=0), "N >= 1"),
    (dict(name="abc-resnet18", M=0), "M >= 1"),
    (dict(name="abc-resnet18", N=0), "N >= 1"),
    (dict(name="resnet18", batch=0), "batch"),
    (dict(name="resnet18", image_size=16), "image size"),
])
def test_bad_arguments_raise_patvm_error(kwargs, message):
    with pytest.raises(PatvmError, match=message):
        zoo.build_model(**kwargs)


def test_twins_ignore_m_and_n():
    zoo.build_model("mobilenet-v1", M=3, N=0, image_size=SIZE)


def test_cli_zoo_writes_a_model(tmp_path, capfd):      # capfd: the CLI writes Python's stderr to descriptor 2
    path = tmp_path / "m.onnx"
    assert cli.main(["zoo", "abc-mobilenet-v1", "--M", "2", "--N", "3", "--image-size", "32", "--batch", "3",
                     "-o", str(path)]) == 0
    captured = capfd.readouterr()
    assert f"wrote {path}" in captured.out
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    # the progress bar counted every conv and the FC; off a terminal, as lines (no redraws)
    layers = sum(node.op_type in ("Conv", "Gemm") for node in model.graph.node)
    assert captured.err.splitlines()[-1].startswith(f"building abc-mobilenet-v1  {layers} layers [")
    assert "\r" not in captured.err
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3


@pytest.mark.parametrize("argv,message", [
    (["zoo", "resnet101"], "unknown zoo model 'resnet101'"),
    (["zoo", "pa-resnet18", "--M", "5"], "even number of weight pieces"),
])
def test_cli_zoo_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, message):
    path = tmp_path / "m.onnx"
    assert cli.main(argv + ["--image-size", "32", "-o", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("patvm: error: ") and message in err and err.count("\n") == 1
    assert not path.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pa-resnet18", "abc-resnet18", "pa-mobilenet-v1"])
def test_full_size_model_runs_in_onnxruntime(name):
    model = zoo.build_model(name)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((2, 1, 3, 224, 224), dtype=np.float32)
    a, b = (session.run(None, {"input": xi})[0] for xi in x)
    assert np.all(np.isfinite(a)) and a.std() > 0.1 and np.abs(a - b).max() > 0.1
