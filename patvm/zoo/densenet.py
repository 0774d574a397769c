"""DenseNet-121 (Huang et al. 2017), binarised as in the PA paper (Table 4): the 1x1 and 3x3 convs of
every dense layer and the 1x1 conv of every transition are binary; the first conv and the FC are not.

Dense layer (pre-activation, BN before the approximation):
    x -> BN -> ReLU -> PAQuantize -> Conv1x1(W_bar) -> BN -> ReLU -> PAQuantize -> Conv3x3(W_bar) -> concat(x, .)
Transition: BN -> ReLU -> PAQuantize -> Conv1x1(W_bar) -> AvgPool 2x2/2.
"""
from __future__ import annotations

import onnx

from patvm.zoo.builder import Act, NetBuilder

GROWTH = 32
BOTTLENECK_WIDTH = 4 * GROWTH
BLOCK_LAYERS = (6, 12, 24, 16)


def dense_layer(b: NetBuilder, x: Act) -> Act:
    y = b.relu(b.batchnorm(x))
    y = b.binary_conv_bn(y, BOTTLENECK_WIDTH, 1, relu=True)
    y = b.binary_conv(y, GROWTH, 3)
    return b.concat([x, y])


def transition(b: NetBuilder, x: Act) -> Act:
    y = b.relu(b.batchnorm(x))
    y = b.binary_conv(y, x.channels // 2, 1)
    return b.avgpool(y, 2, 2)


def build_densenet121(b: NetBuilder) -> onnx.ModelProto:
    x = b.stem(b.input(), 64, 7, 2)
    x = b.maxpool(x, 3, 2, 1)
    for i, layers in enumerate(BLOCK_LAYERS):
        for _ in range(layers):
            x = dense_layer(b, x)
        if i < len(BLOCK_LAYERS) - 1:
            x = transition(b, x)
    x = b.relu(b.batchnorm(x))
    return b.output(b.classifier(x))
