"""PA-ONNX export of trained models: the GraphWriter's form, the full checker, onnxruntime == torch."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from patvm.approx import approximate_weights_abc, approximate_weights_pa
from patvm.errors import PatvmError
from patvm.onnx_format import DOMAIN, OP_TYPE
from patvm.train import (
    ABCActivationQuantizer,
    ABCConv2d,
    ABCWeightQuantizer,
    PAConv2d,
    PALinear,
    PAQuantizer,
    PAWeightQuantizer,
    calibrate_activation_quantizers,
    export_onnx,
)


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def special_values(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    t = np.ravel(thresholds)
    special = np.concatenate([t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), [np.inf, -np.inf, 0.0]])
    x.reshape(-1)[: special.size] = special.astype(np.float32)
    return x


@pytest.mark.parametrize("quantizer", [
    PAQuantizer(5),
    PAQuantizer(3, channels=4),
    PAQuantizer(4, channels=4, per_channel_levels=True),
    ABCActivationQuantizer(3, shifts=[0.3, -0.2, 0.1], betas=[0.5, 0.7, 0.2]),
], ids=["pa", "pa-per-channel", "pa-per-channel-levels", "abc"])
def test_quantizer_only_export_is_bit_for_bit(quantizer):
    rng = np.random.default_rng(0)
    quantizer.init_from_data(torch.relu(torch.randn(64, 4, 5, 5)))
    x = special_values(rng.standard_normal((3, 4, 5, 5)).astype(np.float32) * 2, quantizer.staircase().thresholds)
    model = export_onnx(nn.Sequential(quantizer), torch.from_numpy(x))
    nodes = list(model.graph.node)
    assert [(n.domain, n.op_type) for n in nodes[:-1]] == [(DOMAIN, OP_TYPE)] and nodes[-1].op_type == "Identity"
    with torch.no_grad():
        expected = quantizer(torch.from_numpy(x)).numpy()
    got = run_onnx(model, x)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    levels = initializer(model, nodes[0].input[2])
    if quantizer.family == "pa":
        assert np.all(levels[..., 0] == 0)
    else:
        assert levels[0] == pytest.approx(-float(quantizer.betas.detach().sum()), rel=1e-6)


def tiny_model(family: str) -> nn.Sequential:
    torch.manual_seed(0)
    if family == "pa":
        binary = dict(input_quantizer=PAQuantizer(5), kernel_quantizer=PAWeightQuantizer(4))
        binary2 = dict(input_quantizer=PAQuantizer(3, channels=16), kernel_quantizer=PAWeightQuantizer(2))
        conv = PAConv2d
    else:
        binary = dict(input_quantizer=ABCActivationQuantizer(5), kernel_quantizer=ABCWeightQuantizer(3))
        binary2 = dict(input_quantizer=ABCActivationQuantizer(3), kernel_quantizer=ABCWeightQuantizer(2))
        conv = ABCConv2d
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(conv(8, 16, 3, padding=1, bias=False, **binary), nn.BatchNorm2d(16), nn.ReLU()),
        nn.MaxPool2d(2),
        conv(16, 16, 3, stride=1, padding=1, **binary2), nn.BatchNorm2d(16, affine=False), nn.ReLU(),
        nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1),
        nn.Linear(16, 10),
    )


def train_briefly(model: nn.Module, steps: int = 30) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 8, 8, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    calibrate_activation_quantizers(model, x)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return x


@pytest.mark.parametrize("family", ["pa", "abc"])
def test_trained_model_export_matches_torch(family, tmp_path):
    model = tiny_model(family)
    x = train_briefly(model)
    path = tmp_path / f"{family}.onnx"
    exported = export_onnx(model, x[:1], path)
    assert model.training                                        # the export leaves the mode as it was
    loaded = onnx.load(path)
    onnx.checker.check_model(loaded, full_check=True)
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run_onnx(loaded, x.numpy()), expected, atol=1e-4, rtol=1e-4)

    quantize_nodes = [n for n in exported.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]
    assert len(quantize_nodes) == 2
    convs = [n for n in exported.graph.node if n.op_type == "Conv"]
    assert [c.input[0] for c in convs[1:]] == [n.output[0] for n in quantize_nodes]   # each binary conv reads one
    approximate = approximate_weights_pa if family == "pa" else approximate_weights_abc
    for conv_node, layer, M in zip(convs[1:], [model[3][0], model[5]], [4 if family == "pa" else 3, 2]):
        np.testing.assert_array_equal(initializer(exported, conv_node.input[1]),
                                      approximate(layer.weight.detach().numpy(), M).w_bar)


def test_binary_linear_exports_as_gemm_with_its_quantizer():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), PALinear(12, 4, input_quantizer=PAQuantizer(3),
                                                 kernel_quantizer=PAWeightQuantizer(2)))
    x = torch.rand(5, 3, 2, 2) * 3
    exported = export_onnx(model, x)
    assert [n.op_type for n in exported.graph.node] == ["Flatten", OP_TYPE, "Gemm", "Identity"]
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(exported, x.numpy()), model(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("module", [
    nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid()),
    nn.Sequential(nn.Conv2d(1, 2, 3, padding=(1, 0))),
    nn.Sequential(nn.Conv2d(1, 2, 3, stride=(1, 2))),
    nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")),
    nn.Sequential(PAWeightQuantizer(2)),
    nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)),
], ids=["sigmoid", "non-square-padding", "non-square-stride", "same-padding", "weight-quantizer", "ceil-mode"])
def test_unsupported_modules_are_refused_by_name(module):
    with pytest.raises(PatvmError, match="cannot export"):
        export_onnx(module, torch.zeros(1, 1, 6, 6))


def test_avgpool_with_padding_keeps_torchs_count_include_pad():
    model = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1), nn.AvgPool2d(2, padding=1, count_include_pad=False))
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(export_onnx(model, x), x.numpy()), model(x).numpy(), atol=1e-6)
