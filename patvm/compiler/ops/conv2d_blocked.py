"""The fp32 conv2d in a blocked channel layout, the way fast CPU libraries compute it (NeoCPU, Liu et al.,
USENIX ATC 2019): data NCHW[b]c, weights OIHW[b]i[b]o (transformed at compile time), output NCHW[b]c.

    y[n, o_, oh, ow, oi] = sum_{c_, kh, kw, ci} x[n, c_, oh*s + kh - p, ow*s + kw - p, ci] * w[o_, c_, kh, kw, ci, oi]

and the depthwise conv in the same layout, weights [C/b, 1, KH, KW, b]:

    y[n, c_, oh, ow, ci] = sum_{kh, kw} x[n, c_, oh*s + kh - p, ow*s + kw - p, ci] * w[c_, 0, kh, kw, ci]

The schedule (patvm.compiler.schedules.cpu.Conv2dBlockedCPU) keeps a register tile of `ow_tile` output
pixels x the b output channels of one block in vector registers and broadcasts one input value into each
FMA (the depthwise conv multiplies input vectors instead). The output width is computed padded to a
multiple of `ow_tile` (the tile never has a ragged end) and cropped by the output block, into which the
epilogue (BatchNorm, ReLU, residual add) is inlined.

`patvm.compiler.layout` puts every conv2d it can into this layout with Relax's ConvertLayout (weights
OIHW[b]o: only output channels blocked, so depthwise weights, with one input channel, block too; the
legalisation regroups them to OIHW[b]i[b]o at compile time), so a run of fp32 layers stays blocked and
layout transforms happen only at its edges. A grouped (not depthwise) or dilated conv that ConvertLayout
blocked is computed by TVM's NCHW conv between unblocking and blocking steps. A conv with fewer
input channels than a block (the 3-channel stem) keeps NCHW data at the Relax level: a small kernel of its
own blocks its input (block = C), and the conv writes blocked output (NCHW output when its output
channels do not divide into blocks).

A depthwise conv between layers that exchange NCHW (bit-serial ones) stays NCHW instead
(`depthwise_conv2d_nchw`, vectorised along the output row; layout.plain_elementwise puts it there).

Block names are the contract with the schedule: "conv2d_blocked_pad", "conv2d_blocked",
"depthwise_conv2d_blocked" or "depthwise_conv2d_nchw", "conv2d_blocked_output".
"""
from __future__ import annotations

import re

from tvm import te, topi
from tvm.relax import BlockBuilder, Call, Expr

PAD_BLOCK = "conv2d_blocked_pad"
CONV_BLOCK = "conv2d_blocked"
DEPTHWISE_BLOCK = "depthwise_conv2d_blocked"
DEPTHWISE_NCHW_BLOCK = "depthwise_conv2d_nchw"
OUTPUT_BLOCK = "conv2d_blocked_output"

_BLOCKED_DATA = re.compile(r"^NCHW(\d+)c$")
_BLOCKED_KERNEL = re.compile(r"^OIHW(\d+)o$")


def ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _geometry(h: int, wd: int, kernel, strides, padding, ow_tile: int):
    """(output height, true output width, output width padded to a multiple of ow_tile, the padding
    (top, left, bottom, right) with its right side widened so that the padded width reads zeros only)."""
    kh, kw = kernel
    sh, sw = (int(v) for v in strides)
    top, left, bottom, right = (int(v) for v in padding)
    oh = (h + top + bottom - kh) // sh + 1
    ow = (wd + left + right - kw) // sw + 1
    owp = ceil_to(ow, ow_tile)
    return oh, ow, owp, (top, left, bottom, max(right, (owp - 1) * sw + kw - wd - left))


def _padded_input(x: te.Tensor, kernel, strides, padding, ow_tile: int):
    """(padded x, output height, output width padded to a multiple of ow_tile, true output width)."""
    _, _, h, wd, _ = (int(v) for v in x.shape)
    oh, ow, owp, (top, left, bottom, right) = _geometry(h, wd, kernel, strides, padding, ow_tile)
    if top or left or bottom or right:
        x = topi.nn.pad(x, [0, 0, top, left, 0], [0, 0, bottom, right, 0], name=PAD_BLOCK)
    return x, oh, owp, ow


def _cropped(conv: te.Tensor, ow: int) -> te.Tensor:
    n, cb, oh, owp, b = (int(v) for v in conv.shape)
    if owp == ow:
        return conv
    return te.compute((n, cb, oh, ow, b), lambda *i: conv(*i), name=OUTPUT_BLOCK)


def conv2d_blocked(x: te.Tensor, w: te.Tensor, strides, padding, ow_tile: int, nchw_output: bool = False) -> te.Tensor:
    """x [N, C/ib, H, W, ib], w [O/ob, C/ib, KH, KW, ib, ob] -> [N, O/ob, OH, OW, ob] (or [N, O, OH, OW])."""
    n, cb, _, _, ib = (int(v) for v in x.shape)
    obn, _, kh, kw, _, ob = (int(v) for v in w.shape)
    sh, sw = (int(v) for v in strides)
    xp, oh, owp, ow = _padded_input(x, (kh, kw), strides, padding, ow_tile)
    rc = te.reduce_axis((0, cb), "rc")
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    ri = te.reduce_axis((0, ib), "ri")
    conv = te.compute((n, obn, oh, owp, ob), lambda b, o, y, xx, oi: te.sum(
        xp[b, rc, y * sh + rh, xx * sw + rw, ri] * w[o, rc, rh, rw, ri, oi], axis=[rc, rh, rw, ri]), name=CONV_BLOCK)
    if nchw_output:
        return te.compute((n, obn * ob, oh, ow), lambda b, c, y, xx: conv[b, c // ob, y, xx, c % ob], name=OUTPUT_BLOCK)
    return _cropped(conv, ow)


def depthwise_conv2d_blocked(x: te.Tensor, w: te.Tensor, strides, padding, ow_tile: int) -> te.Tensor:
    """x [N, C/b, H, W, b], w [C/b, 1, KH, KW, b] -> [N, C/b, OH, OW, b]."""
    n, cb, _, _, b = (int(v) for v in x.shape)
    _, _, kh, kw, _ = (int(v) for v in w.shape)
    sh, sw = (int(v) for v in strides)
    xp, oh, owp, ow = _padded_input(x, (kh, kw), strides, padding, ow_tile)
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    conv = te.compute((n, cb, oh, owp, b), lambda i, c, y, xx, ci: te.sum(
        xp[i, c, y * sh + rh, xx * sw + rw, ci] * w[c, 0, rh, rw, ci], axis=[rh, rw]), name=DEPTHWISE_BLOCK)
    return _cropped(conv, ow)


def depthwise_conv2d_nchw(x: te.Tensor, w: te.Tensor, strides, padding, vector: int) -> te.Tensor:
    """x [N, C, H, W], w [C, 1, KH, KW] -> [N, C, OH, OW]: a depthwise conv between layers that exchange NCHW
    (bit-serial ones), vectorised along the output row instead of over a channel block, so that no layout
    transform surrounds it (patvm.compiler.layout.plain_elementwise). The row is computed padded to a
    multiple of `vector` and cropped (a 14-wide row: one vector of 16, not 7 + 7 lanes)."""
    n, c, h, wd = (int(v) for v in x.shape)
    _, _, kh, kw = (int(v) for v in w.shape)
    sh, sw = (int(v) for v in strides)
    oh, ow, owp, (top, left, bottom, right) = _geometry(h, wd, (kh, kw), strides, padding, vector)
    right += -(wd + left + right) % sw                      # whole phases
    hp, phase_width = h + top + bottom, (wd + left + right) // sw
    # the padded plane with its columns split by phase (column q * sw + phase at [phase, :, q]): a strided
    # conv then reads each kernel tap's pixels contiguously, as a stride-1 conv does
    phases = te.compute((n, c, sw, hp, phase_width), lambda i, ch, ph, y, q: te.if_then_else(
        te.all(y >= top, y < top + h, q * sw + ph >= left, q * sw + ph < left + wd),
        x[i, ch, y - top, q * sw + ph - left], te.const(0.0, x.dtype)), name=PAD_BLOCK)
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    conv = te.compute((n, c, oh, owp), lambda i, ch, y, xx: te.sum(
        phases[i, ch, rw % sw, y * sh + rh, xx + rw // sw] * w[ch, 0, rh, rw], axis=[rh, rw]),
        name=DEPTHWISE_NCHW_BLOCK)
    if owp == ow:
        return conv
    return te.compute((n, c, oh, ow), lambda *i: conv(*i), name=OUTPUT_BLOCK)


def nchw_vector(width: int, lanes: int) -> int:
    """fp32 lanes per vector of an NCHW row: a whole register, or half of one for a row narrower than it."""
    return lanes if width >= lanes else max(1, lanes // 2)


def block_nchw(x: te.Tensor, block: int) -> te.Tensor:
    """[N, C, H, W] -> [N, C/block, H, W, block]."""
    n, c, h, w = (int(v) for v in x.shape)
    return te.compute((n, c // block, h, w, block), lambda b, o, y, xx, i: x[b, o * block + i, y, xx],
                      name="block_data")


def unblock_nchw(x: te.Tensor) -> te.Tensor:
    """[N, C/b, H, W, b] -> [N, C, H, W]."""
    n, cb, h, w, b = (int(v) for v in x.shape)
    return te.compute((n, cb * b, h, w), lambda i, c, y, xx: x[i, c // b, y, xx, c % b], name="unblock_data")


def unblock_oihw(w: te.Tensor) -> te.Tensor:
    """[O/ob, C, KH, KW, ob] -> [O, C, KH, KW]."""
    a, c, kh, kw, ob = (int(v) for v in w.shape)
    return te.compute((a * ob, c, kh, kw), lambda o, i, y, xx: w[o // ob, i, y, xx, o % ob], name="unblock_weight")


def block_input_channels(w: te.Tensor, ib: int) -> te.Tensor:
    """[O/ob, C, KH, KW, ob] -> [O/ob, C/ib, KH, KW, ib, ob]: a step over the input channels of a block
    reads consecutive weight vectors."""
    a, c, kh, kw, ob = (int(v) for v in w.shape)
    return te.compute((a, c // ib, kh, kw, ib, ob), lambda o, b, y, xx, i, j: w[o, b * ib + i, y, xx, j],
                      name="block_weight")


def block_oihw(w: te.Tensor, ib: int, ob: int) -> te.Tensor:
    """[O, C, KH, KW] -> [O/ob, C/ib, KH, KW, ib, ob]."""
    o, c, kh, kw = (int(v) for v in w.shape)
    return te.compute((o // ob, c // ib, kh, kw, ib, ob),
                      lambda a, b, y, xx, i, j: w[a * ob + j, b * ib + i, y, xx], name="block_weight")


# ------------------------------------------------------------------------------------------ register tile
def output_tile(width: int, lanes: int, registers: int, block: int) -> int:
    """Output pixels per register tile for `block` output channels: as many as the vector registers hold
    besides the weight vectors and one broadcast, chosen to waste the least padded width."""
    vectors = max(1, block // lanes)
    widest = max(1, min(14, (registers - vectors - 1) // vectors))
    candidates = {*range(max(1, widest - 2), widest + 1), *([width] if width <= widest else [])}
    # each tile also loads its weight vectors once per reduction step: a wider tile amortises that
    return min(candidates, key=lambda t: (ceil_to(width, t) // t * (t + vectors), -t))


def register_tile(width: int, out_blocks: int, lanes: int, registers: int, block: int,
                  depthwise: bool = False) -> tuple[int, int]:
    """(output pixels, output blocks) of a conv's register tile. At least two vectors of output channels
    per tile (two blocks where one block is one vector, as on AVX-512): each broadcast input value then
    feeds two FMAs, or the broadcasts, one load per FMA, would bound the loop. A depthwise conv
    multiplies input vectors, no broadcast: one block."""
    vectors = max(1, block // lanes)
    blocks = 1 if depthwise else next(b for b in (max(1, 2 // vectors), 1) if out_blocks % b == 0)
    return output_tile(width, lanes, registers, block * blocks), blocks


def vector_shape(target) -> tuple[int, int]:
    """(fp32 lanes, vector registers) of the target's CPU."""
    from tvm.target import codegen
    if "aarch64" in str(target.attrs.get("mtriple", "")):
        return 4, 32
    if codegen.llvm_cpu_has_features("avx512f", target):
        return 16, 32
    return 8, 16


# ------------------------------------------------------------------------------------------ legalisation
def blocked_layout(data_layout: str, kernel_layout: str) -> tuple[int, int] | None:
    """(ib, ob) when the layouts are NCHW[ib]c / OIHW[ob]o, else None."""
    data, kernel = _BLOCKED_DATA.match(data_layout), _BLOCKED_KERNEL.match(kernel_layout)
    if data and kernel:
        return int(data.group(1)), int(kernel.group(1))
    return None


def nchw_blocks(channels: int, out_channels: int, block: int) -> tuple[int, int] | None:
    """(ib, ob) for an NCHW conv kept at the Relax level: ib = C when C is small (the stem)."""
    ib = channels if channels < block else (block if channels % block == 0 else None)
    ob = next((b for b in (block, block // 2) if b and out_channels % b == 0), None)
    return (ib, ob) if ib and ob else None


def legalize_conv2d(bb: BlockBuilder, call: Call, block: int, fallback) -> Expr:
    """relax.nn.conv2d -> the blocked kernel where it applies (groups 1 or depthwise, no dilation), else
    `fallback`."""
    from tvm.target import Target
    attrs = call.attrs
    x, w = call.args
    if call.ty.shape is None:
        return fallback(bb, call)
    undilated = [int(d) for d in attrs.dilation] == [1, 1]
    groups = int(attrs.groups)
    blocks = blocked_layout(attrs.data_layout, attrs.kernel_layout)
    lanes, registers = vector_shape(Target.current())
    if blocks is not None and attrs.out_layout == attrs.data_layout:
        ib, ob = blocks
        width = int(call.ty.shape[3])
        channels = int(x.ty.shape[1]) * ib
        if undilated and groups == 1:
            wb = bb.emit_te(block_input_channels, w, ib, primfunc_name_hint="block_weight")  # folded: a constant
            return bb.call_te(conv2d_blocked, x, wb, strides=attrs.strides, padding=attrs.padding,
                              ow_tile=register_tile(width, int(w.ty.shape[0]), lanes, registers, ob)[0],
                              primfunc_name_hint="conv2d_blocked")
        if undilated and groups == channels and ib == ob and int(w.ty.shape[1]) == 1:
            return bb.call_te(depthwise_conv2d_blocked, x, w, strides=attrs.strides, padding=attrs.padding,
                              ow_tile=register_tile(width, int(w.ty.shape[0]), lanes, registers, ob, depthwise=True)[0],
                              primfunc_name_hint="depthwise_conv2d_blocked")
        # a grouped or dilated conv that ConvertLayout blocked: TVM's NCHW conv between (un)blocking steps
        xn = bb.emit_te(unblock_nchw, x, primfunc_name_hint="unblock_data")
        wn = bb.emit_te(unblock_oihw, w, primfunc_name_hint="unblock_weight")   # folded: w is a constant
        y = bb.emit_te(topi.nn.conv, xn, wn, attrs.strides, attrs.padding, attrs.dilation, groups,
                       "NCHW", "OIHW", primfunc_name_hint="conv2d")
        return bb.call_te(block_nchw, y, ob, primfunc_name_hint="block_data")
    c = int(x.ty.shape[1])
    plain = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NCHW", "OIHW", "NCHW")
    if plain and undilated and groups == c > 1 and int(w.ty.shape[0]) == c and int(w.ty.shape[1]) == 1:
        return bb.call_te(depthwise_conv2d_nchw, x, w, strides=attrs.strides, padding=attrs.padding,
                          vector=nchw_vector(int(call.ty.shape[3]), lanes), primfunc_name_hint="depthwise_conv2d_nchw")
    if not undilated or groups != 1 or attrs.data_layout != "NCHW":
        return fallback(bb, call)
    stem = _BLOCKED_KERNEL.match(attrs.kernel_layout)
    if stem and _BLOCKED_DATA.match(attrs.out_layout) and c < block:
        # the stem as ConvertLayout left it: NCHW data, blocked weights and output; its input is blocked
        # here with block = C, so the kernel reads it like any other blocked tensor
        ob = int(stem.group(1))
        xb = bb.emit_te(block_nchw, x, c, primfunc_name_hint="block_data")
        wb = bb.emit_te(block_input_channels, w, c, primfunc_name_hint="block_weight")   # folded: a constant
        return bb.call_te(conv2d_blocked, xb, wb, strides=attrs.strides, padding=attrs.padding,
                          ow_tile=register_tile(int(call.ty.shape[3]), int(w.ty.shape[0]), lanes, registers, ob)[0],
                          primfunc_name_hint="conv2d_blocked")
    if attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW":
        return fallback(bb, call)
    blocks = nchw_blocks(c, int(w.ty.shape[0]), block)
    if blocks is None:
        return fallback(bb, call)
    ib, ob = blocks
    xb = bb.emit_te(block_nchw, x, ib, primfunc_name_hint="block_data")
    wb = bb.emit_te(block_oihw, w, ib, ob, primfunc_name_hint="block_weight")   # folded: w is a constant
    return bb.call_te(conv2d_blocked, xb, wb, strides=attrs.strides, padding=attrs.padding,
                      ow_tile=register_tile(int(call.ty.shape[3]), int(w.ty.shape[0]) // ob, lanes, registers, ob)[0],
                      nchw_output=True,
                      primfunc_name_hint="conv2d_blocked")
