"""`patvm stats`: the PA paper's counting rules (sec. 4.6.1) reproduce Table 7; the CLI and error paths."""
import functools
import json

import numpy as np
import onnx
import pytest

from patvm import cli, stats, zoo
from patvm.approx import Staircase, approximate_weights_pa
from patvm.errors import PatvmError
from patvm.onnx_format import GraphWriter, save_model

# Table 7 of the PA paper (M = 4, N = 5): memory usage (Mbit) and Flops
TABLE7 = {
    "pa-resnet18": (61.6, 6.74e8), "resnet18": (374.1, 1.81e9),
    "pa-resnet34": (85.0, 1.27e9), "resnet34": (697.3, 3.66e9),
    "pa-resnet50": (161.3, 1.44e9), "resnet50": (817.8, 3.86e9),
}


@functools.cache
def table7_stats(name: str) -> dict:
    return stats.model_stats(zoo.build_model(name, M=4, N=5, batch=1, image_size=224))


def rel(ours: float, paper: float) -> float:
    return abs(ours - paper) / paper


@pytest.mark.parametrize("name", [n for n in TABLE7 if n != "pa-resnet34"])
def test_table7_memory_within_2_percent(name):
    assert rel(table7_stats(name)["total"]["memory_mbit"], TABLE7[name][0]) < 0.02


def test_table7_pa_resnet34_memory_is_its_binary_weights_alone():
    """Table 7's 85.0 Mbit leaves out the fp32 first conv, FC and BN it counts for PA-ResNet18/50: the
    binary weights alone are 85.03 Mbit; the same rules as the other rows give 102.3 Mbit."""
    result = table7_stats("pa-resnet34")
    binary_bits = sum(layer["M"] * layer["binary_params"] for layer in result["layers"] if layer["kind"] == "binary")
    assert rel(binary_bits / 1e6, TABLE7["pa-resnet34"][0]) < 0.002
    assert rel(result["total"]["memory_mbit"], 102.3) < 0.002


@pytest.mark.parametrize("name", list(TABLE7))
def test_table7_flops_within_5_percent(name):
    assert rel(table7_stats(name)["total"]["flops"], TABLE7[name][1]) < 0.05


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_table7_binary_layout(depth):
    """Every conv but the first is binary with M = 4, N = 5; the binary input shapes pass PAQuantize."""
    layers = table7_stats(f"pa-resnet{depth}")["layers"]
    convs = [la for la in layers if la["op"] in ("Conv", "Gemm")]
    assert [la["kind"] for la in convs] == ["fp32"] + ["binary"] * (len(convs) - 2) + ["fp32"]
    assert all((la["M"], la["N"]) == (4, 5) for la in convs[1:-1])
    assert convs[1]["shapes"]["input"] == [1, 64, 56, 56]
    assert convs[-1]["shapes"]["output"] == [1, 1000]


def test_full_precision_counts_are_params_and_macs():
    result = table7_stats("resnet18")
    total = result["total"]
    assert total["params"] == 11_689_512          # torchvision's resnet18 parameter count
    assert total["binary_layers"] == 0 and total["binary_params"] == 0
    assert total["memory_mbit"] == pytest.approx(32 * total["params"] / 1e6)
    assert total["flops"] == total["macs"] == 1_814_073_344


def tiny_model() -> onnx.ModelProto:
    """PAQuantize(N=2) -> Conv 3x3 (PA M=2 weights) -> BN -> ReLU -> GAP -> Flatten -> Gemm."""
    w = GraphWriter("tiny")
    x = w.input("input", [1, 2, 4, 4])
    q = w.pa_quantize(x, Staircase(np.array([0.5, 1.0]), np.array([0.0, 0.7, 1.5])))
    weights = np.random.default_rng(0).standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = w.conv(q, approximate_weights_pa(weights, 2).w_bar, pad=1)
    y = w.relu(w.batchnorm(y, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)))
    y = w.gemm(w.flatten(w.global_avgpool(y)), np.ones((5, 3)), np.zeros(5))
    w.output(y, [1, 5])
    return w.model()


def test_counting_rules_on_a_tiny_model():
    result = stats.model_stats(tiny_model())
    by_op = {layer["op"]: layer for layer in result["layers"]}
    assert list(by_op) == ["PAQuantize", "Conv", "BatchNormalization", "Gemm"]
    conv = by_op["Conv"]
    assert (conv["kind"], conv["M"], conv["N"]) == ("binary", 2, 2)
    assert conv["binary_params"] == 54 and conv["real_params"] == 2           # 2 scales alpha_i
    assert conv["memory_mbit"] == pytest.approx((2 * 54 + 32 * 2) / 1e6)     # M bits a weight + 32 a real
    assert conv["macs"] == 3 * 16 * 18
    assert conv["flops"] == pytest.approx(2 * 2 * 864 / 64 + 2 * 2 * 48)     # bitwise / 64 + alpha*beta products
    assert conv["shapes"] == {"input": [1, 2, 4, 4], "output": [1, 3, 4, 4], "weight": [3, 2, 3, 3]}
    quant = by_op["PAQuantize"]
    assert quant["real_params"] == 5 and quant["comparisons"] == 2 * 32 and quant["flops"] == 0
    assert by_op["BatchNormalization"]["real_params"] == 6
    gemm = by_op["Gemm"]
    assert (gemm["kind"], gemm["real_params"], gemm["flops"]) == ("fp32", 20, 15)
    total = result["total"]
    assert total["memory_mbit"] == pytest.approx((2 * 54 + 32 * (2 + 5 + 6 + 20)) / 1e6)
    assert total["flops"] == pytest.approx(54 + 192 + 15)
    assert total["comparisons"] == 64


def test_abc_layers_report_the_number_of_bases():
    result = stats.model_stats(zoo.build_model("abc-resnet18", M=3, N=2, image_size=32))
    binary = [la for la in result["layers"] if la["kind"] == "binary"]
    assert len(binary) == 19 and all((la["M"], la["N"]) == (3, 2) for la in binary)


@pytest.fixture(scope="module")
def small_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("stats") / "pa-mobilenet.onnx"
    save_model(zoo.build_model("pa-mobilenet-v1", image_size=32), path)
    return path


def test_cli_stats_json(small_model_path, capsys):
    assert cli.main(["stats", str(small_model_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"layers", "total"}
    assert isinstance(result["total"]["memory_mbit"], float) and isinstance(result["total"]["flops"], float)
    for layer in result["layers"]:
        assert set(layer) >= {"name", "op", "kind", "params", "memory_mbit", "flops", "M", "N", "shapes"}
        assert layer["kind"] in ("binary", "fp32")
    kinds = [la["kind"] for la in result["layers"] if la["op"] == "Conv"]
    assert kinds.count("binary") == 13 and kinds.count("fp32") == 14   # pointwise binary; first + depthwise fp32
    assert result == json.loads(json.dumps(stats.model_stats(stats.load_checked(small_model_path))))


def test_cli_stats_table(small_model_path, capsys):
    assert cli.main(["stats", str(small_model_path)]) == 0
    out = capsys.readouterr().out
    result = stats.model_stats(stats.load_checked(small_model_path))
    assert out.count("\n") == len(result["layers"]) + 4
    assert all(layer["name"] in out for layer in result["layers"])
    assert f"total: {result['total']['memory_mbit']:.2f} Mbit" in out


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    (b"definitely not protobuf", "not an ONNX protobuf file"),
    (b"", "file is empty"),
])
def test_load_checked_unreadable(tmp_path, capsys, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PatvmError, match=message):
        stats.load_checked(path)
    assert cli.main(["stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("patvm: error: ") and message in err and err.count("\n") == 1


def test_load_checked_checker_failure(tmp_path):
    model = tiny_model()
    model.graph.node[1].op_type = "NoSuchOp"
    path = tmp_path / "broken.onnx"
    save_model(model, path)
    with pytest.raises(PatvmError, match="fails the ONNX checker") as info:
        stats.load_checked(path)
    assert "\n" not in str(info.value)
