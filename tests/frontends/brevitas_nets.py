"""Brevitas networks built in the test run (random weights, BatchNorm statistics from a few train-mode
batches) and exported to QONNX: brevitas_examples.bnn_pynq TFC / CNV, and a small binary ResNet."""
from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
brevitas = pytest.importorskip("brevitas", reason="the QONNX tests need brevitas (pip install brevitas==0.13.4)")
pytest.importorskip("qonnx", reason="the QONNX tests need qonnx's executor (pip install qonnx)")
pytest.importorskip("onnxoptimizer", reason="brevitas' QONNX export needs onnxoptimizer")

import brevitas.nn as qnn  # noqa: E402
from brevitas.core.scaling import ScalingImplType  # noqa: E402
from brevitas.core.stats import StatsOp  # noqa: E402
from brevitas.export import export_qonnx  # noqa: E402
from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst  # noqa: E402
from brevitas.quant.scaled_int import Uint8ActPerTensorFloat  # noqa: E402
from torch import nn  # noqa: E402


class BinaryWeightPerChannelMeanAbs(SignedBinaryWeightPerTensorConst):
    """+-s_c per output channel, s_c a parameter initialised from the channel's mean |W| (XNOR-Net's scale).
    (With ScalingImplType.STATS, recomputed in every forward, Brevitas 0.13.4 exports per-channel scales
    that differ from the ones its PyTorch forward uses: docs/qonnx.md.)"""
    scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
    scaling_stats_op = StatsOp.AVE
    scaling_per_output_channel = True


class TwoBitReLU(Uint8ActPerTensorFloat):
    bit_width = 2


def sign_act():
    return qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)


def relu2_act():
    return qnn.QuantReLU(act_quant=TwoBitReLU, return_quant_tensor=True)


class Block(nn.Module):
    """Binary basic block: conv-BN-act-conv-BN + (1x1 strided binary conv-BN) shortcut, then act."""

    def __init__(self, cin, cout, stride, weight_quant, act):
        super().__init__()
        self.conv1 = qnn.QuantConv2d(cin, cout, 3, stride, 1, bias=False, weight_quant=weight_quant)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act()
        self.conv2 = qnn.QuantConv2d(cout, cout, 3, 1, 1, bias=False, weight_quant=weight_quant)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(qnn.QuantConv2d(cin, cout, 1, stride, 0, bias=False, weight_quant=weight_quant),
                                      nn.BatchNorm2d(cout))
        self.act2 = act()

    def forward(self, x):
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(y + (self.down(x) if self.down is not None else x))


class BinaryResNet(nn.Module):
    def __init__(self, weight_quant, act, classes=10, width=16, size=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), act())
        self.block1 = Block(width, width, 1, weight_quant, act)
        self.block2 = Block(width, 2 * width, 2, weight_quant, act)
        self.pool = qnn.TruncAvgPool2d(kernel_size=2, bit_width=2, return_quant_tensor=False)
        self.fc = qnn.QuantLinear(2 * width * (size // 4) ** 2, classes, bias=True, weight_quant=weight_quant)

    def forward(self, x):
        x = self.pool(self.block2(self.block1(self.stem(x))))
        return self.fc(torch.flatten(x, 1))


def calibrate(model: nn.Module, shape, batches: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand((8,) + tuple(shape[1:])))
    return model.eval()


def bnn_pynq(name: str, seed: int = 0):
    from brevitas_examples.bnn_pynq.models import model_with_cfg
    torch.manual_seed(seed)
    model, _ = model_with_cfg(name, pretrained=False)
    shape = (1, 1, 28, 28) if "fc" in name else (1, 3, 32, 32)
    return calibrate(model, shape, seed=seed), shape


def resnet(scale: str, act: str, seed: int = 0, size: int = 16, width: int = 16):
    torch.manual_seed(seed)
    wq = SignedBinaryWeightPerTensorConst if scale == "const" else BinaryWeightPerChannelMeanAbs
    model = BinaryResNet(wq, sign_act if act == "sign" else relu2_act, width=width, size=size)
    shape = (1, 3, size, size)
    return calibrate(model, shape, seed=seed), shape


def export(model: nn.Module, shape, path: str, exporter: str) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.rand(shape), export_path=os.fspath(path), dynamo=(exporter == "dynamo"))
    return onnx.load(os.fspath(path))


def torch_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    return np.asarray(getattr(y, "value", y).detach().numpy())


class OneBitReLU(Uint8ActPerTensorFloat):
    bit_width = 1


def one_bit_relu():
    """A 1-bit unsigned QuantReLU: PyTorch computes {0, s}; Brevitas 0.13.4 exports Relu -> BipolarQuant,
    which computes +-s (docs/qonnx.md)."""
    return nn.Sequential(qnn.QuantReLU(act_quant=OneBitReLU)).eval(), (1, 9)
