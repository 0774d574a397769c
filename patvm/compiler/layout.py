"""Phase 4a, layout: fp32 convolutions in the blocked channel layout on CPUs (patvm.compiler.ops.conv2d_blocked).

Relax's ConvertLayout rewrites every conv2d whose channel counts divide into blocks to NCHW[b]c data and
OIHW[b]o weights and carries the layout through the elementwise ops after it (BatchNorm, ReLU, the
residual add), so consecutive fp32 layers exchange blocked tensors; it inserts layout transforms only where
a run of them meets an op that wants NCHW (the bit-serial kernels, pooling, the classifier). Weight
transforms act on constants and are folded at compile time. The legalisation that turns the blocked
conv2d into patvm's kernel is `conv2d_legalization`.
"""
from __future__ import annotations

import functools

from tvm import relax
from tvm.ir import Op

from patvm.compiler.ops.conv2d_blocked import legalize_conv2d

CHANNEL_BLOCK = 16   # two AVX2 vectors, one AVX-512 vector, four NEON vectors of fp32

_TVM_CONV2D = Op.get("relax.nn.conv2d").get_attr("FLegalize")


def blocked_layout_pass() -> tvm.transform.Pass:  # noqa: F821
    data, kernel = f"NCHW{CHANNEL_BLOCK}c", f"OIHW{CHANNEL_BLOCK}o"   # depthwise weights (I = 1) block too
    return relax.transform.ConvertLayout({"relax.nn.conv2d": [data, kernel]})


def conv2d_legalization():
    """relax.nn.conv2d -> patvm's blocked kernel where it applies, TVM's own legalisation otherwise."""
    return functools.partial(legalize_conv2d, block=CHANNEL_BLOCK, fallback=_TVM_CONV2D)
