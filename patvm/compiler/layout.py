"""Phase 4a, layout: fp32 convolutions in the blocked channel layout on CPUs (patvm.compiler.ops.conv2d_blocked).

Relax's ConvertLayout rewrites every conv2d whose channel counts divide into blocks to NCHW[b]c data and
OIHW[b]o weights (`desired_layouts`) and carries the layout through the ops after it (BatchNorm, ReLU, the
residual add, pooling), so consecutive fp32 layers exchange blocked tensors; it inserts layout transforms
only where a run of them meets an op that wants NCHW (the bit-serial kernels, the classifier). Weight
transforms act on constants and are folded at compile time (or, on weights stored as codes, run once at
load time: patvm.compiler.weight_codes). The legalisation that turns the blocked
conv2d into patvm's kernel is `conv2d_legalization`.
"""
from __future__ import annotations

import functools

import tvm
from tvm import relax
from tvm.ir import Op

from patvm.compiler.ops.conv2d_blocked import legalize_conv2d

CHANNEL_BLOCK = 16   # two AVX2 vectors, one AVX-512 vector, four NEON vectors of fp32

_TVM_CONV2D = Op.get("relax.nn.conv2d").get_attr("FLegalize")


def desired_layouts(call: relax.Call) -> dict[str, list[str]]:
    """ConvertLayout's choice per call: convs blocked (weights OIHW[b]o, so depthwise weights, with one
    input channel, block too); a conv with fewer input channels than a block (the stem) keeps NCHW data
    and writes blocked output, so the run starts right after it. Pooling and elementwise ops follow their
    input's layout."""
    if call.op.name != "relax.nn.conv2d":
        return {}
    data, kernel = f"NCHW{CHANNEL_BLOCK}c", f"OIHW{CHANNEL_BLOCK}o"
    shape = call.args[0].ty.shape
    plain = int(call.attrs.groups) == 1 and [int(d) for d in call.attrs.dilation] == [1, 1]
    if shape is not None and plain and int(shape[1]) < CHANNEL_BLOCK:
        return {"relax.nn.conv2d": ["NCHW", kernel, data]}
    return {"relax.nn.conv2d": [data, kernel]}


def blocked_layout_pass() -> tvm.transform.Pass:
    return relax.transform.ConvertLayout({}, desired_layouts)


def conv2d_legalization():
    """relax.nn.conv2d -> patvm's blocked kernel where it applies, TVM's own legalisation otherwise."""
    return functools.partial(legalize_conv2d, block=CHANNEL_BLOCK, fallback=_TVM_CONV2D)
