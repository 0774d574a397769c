"""Brevitas models exported to QONNX compile with patvm and match qonnx's executor and PyTorch.

Built in the test run: brevitas_examples.bnn_pynq TFC and CNV (W1A1, W1A2, W2A2; TorchScript and dynamo
exporters) and a small binary ResNet (per-tensor constant and per-channel mean|W| weight scales; sign and
2-bit QuantReLU activations; a 1x1 stride-2 downsampling conv; TruncAvgPool2d)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import patvm
from patvm.frontends.qonnx import reference_outputs, to_canonical
from patvm.verify import compare_outputs

bn = pytest.importorskip("brevitas_nets", reason="the QONNX tests need brevitas, qonnx and onnxoptimizer")

slow = pytest.mark.slow
BNN = [
    ("tfc_1w1a", "torchscript"), ("tfc_2w2a", "dynamo"), ("cnv_1w1a", "torchscript"), ("cnv_2w2a", "dynamo"),
    pytest.param("tfc_1w1a", "dynamo", marks=slow), pytest.param("tfc_1w2a", "torchscript", marks=slow),
    pytest.param("tfc_1w2a", "dynamo", marks=slow), pytest.param("tfc_2w2a", "torchscript", marks=slow),
    pytest.param("cnv_1w1a", "dynamo", marks=slow), pytest.param("cnv_1w2a", "torchscript", marks=slow),
    pytest.param("cnv_1w2a", "dynamo", marks=slow), pytest.param("cnv_2w2a", "torchscript", marks=slow),
]
RESNETS = [
    ("const", "sign", "torchscript"),
    ("mean", "relu2", "torchscript"),
    pytest.param("const", "relu2", "torchscript", marks=slow),
    pytest.param("mean", "sign", "torchscript", marks=slow),
    pytest.param("const", "sign", "dynamo", marks=slow),
    pytest.param("mean", "relu2", "dynamo", marks=slow),
]


def check_against_references(path, torch_model, shape, images: int = 2):
    """Compile; every output matches qonnx's executor and PyTorch (top-1 equal, <= 1e-3 of the range)."""
    compiled = patvm.compile(str(path), target="host")
    model = onnx.load(str(path))
    name = compiled.inputs[0]["name"]
    rng = np.random.default_rng(1)
    for _ in range(images):
        x = rng.random(shape).astype(np.float32)
        got = compiled.run(x)[0]
        for want in (reference_outputs(model, {name: x})[0], bn.torch_outputs(torch_model, x)):
            c = compare_outputs(got, want)
            assert c.top1_agreement == 1.0 and c.max_abs_diff <= 1e-3 * c.output_range, c.summary()
    return compiled


def assert_binary_layers_bit_serial(compiled, first_is_fp32: bool):
    layers = compiled.layers
    rest = layers[1:] if first_is_fp32 else layers
    assert all(layer["strategy"] == "bit-serial" for layer in rest), compiled.report()
    if first_is_fp32:
        assert layers[0]["strategy"] == "fp32" and layers[0]["reason"], compiled.report()


@pytest.mark.parametrize("name,exporter", BNN)
def test_bnn_pynq(tmp_path, name, exporter):
    torch_model, shape = bn.bnn_pynq(name)
    path = tmp_path / f"{name}.onnx"
    bn.export(torch_model, shape, path, exporter)
    compiled = check_against_references(path, torch_model, shape)
    # CNV's first conv takes the 8-bit input quantizer: fp32, and the report says why
    assert_binary_layers_bit_serial(compiled, first_is_fp32=name.startswith("cnv"))
    if name.startswith("cnv"):
        assert "activation levels" in compiled.layers[0]["reason"] or "M*N" in compiled.layers[0]["reason"]
    weight_bits = int(name.split("_")[1][0])
    assert all(layer["M"] == weight_bits for layer in compiled.layers if layer["strategy"] == "bit-serial")


@pytest.mark.parametrize("scale,act,exporter", RESNETS)
def test_binary_resnet(tmp_path, scale, act, exporter):
    torch_model, shape = bn.resnet(scale, act)
    path = tmp_path / f"resnet_{scale}_{act}.onnx"
    model = bn.export(torch_model, shape, path, exporter)
    compiled = check_against_references(path, torch_model, shape)
    assert_binary_layers_bit_serial(compiled, first_is_fp32=True)      # the stem conv has a float input
    # binary weights are one plane each, with a per-channel scale too (the scale follows the conv)
    assert all(layer["M"] == 1 for layer in compiled.layers[1:]), compiled.report()
    assert any(layer["weight_shape"][2:] == [1, 1] and layer["strategy"] == "bit-serial"
               for layer in compiled.layers if layer["op"] == "conv2d"), "the 1x1 downsampling conv"
    canonical = to_canonical(model)
    conv_weights = [n.input[1] for n in canonical.graph.node if n.op_type == "Conv"][1:]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in canonical.graph.initializer}
    for w in conv_weights:
        assert len(np.unique(inits[w])) == 2
    if scale == "mean":
        assert all(set(np.unique(inits[w])) == {-1.0, 1.0} for w in conv_weights)
        assert sum(n.op_type == "Mul" and n.name.endswith("__scale")
                   for n in canonical.graph.node) >= len(conv_weights)


def test_one_bit_unsigned_quant_relu_compiles_what_the_file_says(tmp_path):
    """Brevitas' bug (docs/qonnx.md): the file computes +-s where PyTorch computes {0, s}. patvm follows the
    file, as qonnx's executor does."""
    torch_model, shape = bn.one_bit_relu()
    path = tmp_path / "relu1.onnx"
    model = bn.export(torch_model, shape, path, "torchscript")
    assert [n.op_type for n in model.graph.node] == ["Relu", "BipolarQuant"]
    x = np.linspace(-2, 2, 9, dtype=np.float32).reshape(shape)
    got = patvm.compile(str(path), target="host").run(x)[0]
    np.testing.assert_array_equal(got, reference_outputs(model, {model.graph.input[0].name: x})[0])
    assert np.all(got > 0) and np.any(bn.torch_outputs(torch_model, x) == 0)
