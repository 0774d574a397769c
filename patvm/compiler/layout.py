"""Phase 4a, layout: fp32 convolutions in the blocked channel layout on CPUs (patvm.compiler.ops.conv2d_blocked).

Relax's ConvertLayout rewrites every conv2d whose channel counts divide into blocks to NCHW[b]c data and
OIHW[b]o weights (`desired_layouts`) and carries the layout through the ops after it (BatchNorm, ReLU, the
residual add, pooling), so consecutive fp32 layers exchange blocked tensors; it inserts layout transforms
only where a run of them meets an op that wants NCHW (the bit-serial kernels, the classifier); and
`plain_elementwise` moves back to NCHW the elementwise ops whose inputs all exist in NCHW (a residual add
between two bit-serial layers whose shortcut comes from a blocked max-pool), so that no blocked detour is
left between bit-serial layers. Weight
transforms act on constants and are folded at compile time (or, on weights stored as codes, run once at
load time: patvm.compiler.weight_codes). The legalisation that turns the blocked
conv2d into patvm's kernel is `conv2d_legalization`.
"""
from __future__ import annotations

import functools

import tvm
from tvm import relax
from tvm.ir import Op
from tvm.relax.expr_functor import PyExprMutator, mutator

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


ELEMENTWISE_OPS = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
                   "relax.minimum", "relax.nn.relu", "relax.clip"}


def _op_name(expr) -> str | None:
    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, Op) else None


def _ndim(expr) -> int:
    return int(getattr(expr.ty, "ndim", -1))


def _is_depthwise(value) -> bool:
    """A blocked depthwise conv2d (groups = channels)."""
    if _op_name(value) != "relax.nn.conv2d" or _ndim(value.args[0]) != 5:
        return False
    shape = value.args[0].ty.shape
    return int(value.attrs.groups) == int(shape[1]) * int(shape[4]) > 1


@mutator
class _PlainElementwise(PyExprMutator):
    """See plain_elementwise. `unblocked[x]`: the first binding var of layout_transform(x) back to NCHW;
    `position`: each binding var's place in the block (an NCHW twin is used only where it is defined)."""

    def __init__(self, mod, var2val, unblocked, position):
        super().__init__(mod)
        self.var2val = var2val
        self.unblocked = unblocked
        self.position = position
        self.plain_memo: dict = {}

    def plain(self, expr, before: int):
        """An NCHW expression equal to blocked `expr`, defined before binding `before`, or None."""
        if not isinstance(expr, relax.Var):
            return None
        if expr in self.plain_memo:
            return self.plain_memo[expr]
        result = None
        value = self.var2val.get(expr)
        if _op_name(value) == "relax.layout_transform" and _ndim(value.args[0]) == _ndim(expr) - 1:
            result = self.visit_expr(value.args[0])            # blocked from NCHW: the NCHW original
        elif expr in self.unblocked and self.position[self.unblocked[expr]] < before:
            result = self.visit_expr(self.unblocked[expr])     # converted back already, by ConvertLayout
        elif _op_name(value) in ELEMENTWISE_OPS:
            args = [self.plain(a, before) for a in value.args]
            if all(a is not None for a in args):
                result = self.builder_.emit(relax.Call(value.op, args, value.attrs, value.ty_args))
        elif _is_depthwise(value):
            data, weight = (self.plain(a, before) for a in value.args)
            if data is not None and weight is not None:
                a = value.attrs
                result = self.builder_.emit(relax.op.nn.conv2d(
                    data, weight, a.strides, a.padding, a.dilation, a.groups, "NCHW", "OIHW", "NCHW", a.out_dtype))
        if result is not None:
            self.plain_memo[expr] = result
        return result

    def visit_call_(self, call):
        if _op_name(call) == "relax.layout_transform" and _ndim(call.args[0]) == _ndim(call) + 1:
            source = call.args[0]
            plain = self.plain(source, self.position[self.unblocked[source]])
            if plain is not None:
                return plain
        return super().visit_call_(call)


@tvm.transform.module_pass(opt_level=0, name="patvm.PlainElementwise")
def plain_elementwise(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """After ConvertLayout: a transform back to NCHW of an elementwise op's or a depthwise conv's blocked
    output, where every input of that op also exists in NCHW, becomes the op on the NCHW inputs (the
    blocked chain it undid is then dead). ConvertLayout blocks such an op when one input is blocked (a
    shortcut from a blocked max-pool; a depthwise conv between two bit-serial layers, as in a binary
    MobileNet), though its result only feeds NCHW consumers (the bit-serial layers' packers)."""
    func = mod["main"]
    var2val = relax.analysis.get_var2val(func)
    bindings = [b for block in func.body.blocks for b in block.bindings]
    position = {b.var: k for k, b in enumerate(bindings)}
    unblocked = {}
    for b in bindings:
        if _op_name(b.value) == "relax.layout_transform" and _ndim(b.value.args[0]) == _ndim(b.var) + 1:
            unblocked.setdefault(b.value.args[0], b.var)
    if not unblocked:
        return mod
    rewriter = _PlainElementwise(mod, var2val, unblocked, position)
    new_main = rewriter.visit_expr(func)
    rewriter.builder_.update_func(rewriter.builder_.get().get_global_var("main"), new_main)
    # the replaced transforms are now bindings of a var to a var: canonicalised away, so that the packer
    # sees the bit-serial group as its producer (patvm.compiler.fuse_packing)
    rewritten = relax.transform.CanonicalizeBindings()(rewriter.builder_.get())
    return relax.transform.DeadCodeElimination()(rewritten)
