"""MobileNet v1 1.0-224 (Howard et al. 2017), binarised as in the PA paper (Table 4, sec. 4.3): the
pointwise 1x1 convs are binary (PAQuantize -> Conv1x1(W_bar) -> BN -> ReLU), the depthwise 3x3 convs,
the first conv and the FC stay full precision."""
from __future__ import annotations

import onnx

from patvm.zoo.builder import NetBuilder

# (pointwise output channels, depthwise stride) of the 13 depthwise-separable layers
SEPARABLE = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def build_mobilenet_v1(b: NetBuilder) -> onnx.ModelProto:
    x = b.stem(b.input(), 32, 3, 2)
    for out_channels, stride in SEPARABLE:
        x = b.conv_bn(x, x.channels, 3, stride, group=x.channels, relu=True)
        x = b.binary_conv_bn(x, out_channels, 1, relu=True)
    return b.output(b.classifier(x))
