"""ResNet-18/34/50 (He et al. 2016), torchvision layout, binarised the PA way (PA paper sec. 3, 4.6.1).

Basic block (PA-style: BN before the approximation of the next layer's input):
    x -> PAQuantize -> Conv3x3(W_bar) -> BN -> ReLU -> PAQuantize -> Conv3x3(W_bar) -> BN -> (+ s) -> ReLU
    s = x, or in a downsampling block: the same PAQuantize(x) -> Conv1x1/stride(W_bar) -> BN
The block-input quantizer is one node feeding both the 3x3 and the 1x1 downsampling conv (the compiler
packs it once); the paper binarises the downsampling layers too (sec. 4.6.1). Bottleneck blocks
(ResNet-50) binarise all three convs and the downsampling conv alike.

ResNet-50 is the original v1 bottleneck (stride on the first 1x1 conv): that is the 3.86e9 MACs of
Table 7 (torchvision's v1.5, stride on the 3x3, is 4.09e9). The first conv and the FC stay full precision.
"""
from __future__ import annotations

import onnx

from patvm.zoo.builder import Act, NetBuilder

STAGE_WIDTHS = (64, 128, 256, 512)
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
EXPANSION = {"basic": 1, "bottleneck": 4}


def _shortcut(b: NetBuilder, x: Act, qx: Act, out_channels: int, stride: int) -> Act:
    """Identity, or the binary 1x1 downsampling conv on the block's (shared) quantized input."""
    if stride == 1 and x.channels == out_channels:
        return x
    return b.conv_bn(qx, out_channels, 1, stride, binary=True)


def basic_block(b: NetBuilder, x: Act, width: int, stride: int) -> Act:
    qx = b.quantize(x)
    y = b.conv_bn(qx, width, 3, stride, binary=True, relu=True)
    y = b.binary_conv_bn(y, width, 3)
    return b.relu(b.add(y, _shortcut(b, x, qx, width, stride)))


def bottleneck_block(b: NetBuilder, x: Act, width: int, stride: int) -> Act:
    qx = b.quantize(x)
    y = b.conv_bn(qx, width, 1, stride, binary=True, relu=True)
    y = b.binary_conv_bn(y, width, 3, relu=True)
    y = b.binary_conv_bn(y, width * 4, 1)
    return b.relu(b.add(y, _shortcut(b, x, qx, width * 4, stride)))


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def build_resnet(b: NetBuilder, depth: int) -> onnx.ModelProto:
    kind, counts = DEPTHS[depth]
    x = b.stem(b.input(), 64, 7, 2)
    x = b.maxpool(x, 3, 2, 1)
    for stage, (width, count) in enumerate(zip(STAGE_WIDTHS, counts)):
        for i in range(count):
            x = BLOCKS[kind](b, x, width, 2 if (i == 0 and stage > 0) else 1)
    return b.output(b.classifier(x))
