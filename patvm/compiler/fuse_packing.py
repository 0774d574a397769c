"""Fused glue: the next layer's quantize-and-pack joins the bit-serial layer's epilogue.

After FuseOps, a binary layer is one group function (bit-serial conv + bias / BatchNorm / residual add /
ReLU) whose float output usually goes straight into the packer of the next binary layer. FuseOps cannot
join them (the packer is a reduction over channel bits, not elementwise), so this pass does, before
FuseTIR: the group also calls the packer and returns the packed planes -- and the float tensor too when
something else still reads it (a residual add). A ReLU that FuseOps left between the group and the packer
(it does when the group's output is also read elsewhere) moves into the group with the packer. FuseTIR
then makes one PrimFunc, and the CPU schedule packs each output row right after computing it, while it is
still in cache (Riptide's "fused glue", Larq Compute Engine's output transform).
"""
from __future__ import annotations

import tvm
from tvm import relax

from patvm.compiler.lower import PATVM_KERNEL_ATTR

OP_PATTERN_ELEMWISE = 0


def _callee(mod: tvm.IRModule, callee):
    """The module's function behind a GlobalVar, else None."""
    return mod[callee] if isinstance(callee, relax.GlobalVar) and callee in mod.functions else None


def _call_tir_target(mod: tvm.IRModule, expr):
    """The PrimFunc a call_tir binding calls, else None."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
        return _callee(mod, expr.args[0])
    return None


def _call_tir_kernel(mod: tvm.IRModule, expr) -> str | None:
    """patvm's kernel name of a call_tir binding's PrimFunc, if it is one of patvm's."""
    func = _call_tir_target(mod, expr)
    if func is None or func.attrs is None or PATVM_KERNEL_ATTR not in func.attrs:
        return None
    return str(func.attrs[PATVM_KERNEL_ATTR])


def _is_bitserial_group(mod: tvm.IRModule, callee) -> bool:
    """A FuseOps group function holding a bit-serial conv and returning one tensor."""
    func = _callee(mod, callee)
    if not isinstance(func, relax.Function) or func.attrs is None or "Primitive" not in func.attrs:
        return False
    if not isinstance(func.ret_ty, relax.TensorType) or len(func.body.blocks) != 1:
        return False
    return any(_call_tir_kernel(mod, b.value) == "bitserial_conv2d" for b in func.body.blocks[0].bindings)


def _elementwise_step(mod: tvm.IRModule, binding, uses: dict) -> bool:
    """A one-tensor elementwise call_tir read only by the next step: a ReLU that FuseOps left outside the
    group because the group's output is also read elsewhere (a residual add recomputes it there)."""
    func = _call_tir_target(mod, binding.value)
    if func is None or func.attrs is None or PATVM_KERNEL_ATTR in func.attrs:
        return False
    pattern = func.attrs.get("op_pattern")
    return (pattern is not None and int(pattern) == OP_PATTERN_ELEMWISE and len(binding.value.args[1].fields) == 1
            and uses.get(binding.var, 0) == 1)


def _group_with_packing(group: relax.Function, steps: list, pack_call: relax.Call, keep_float: bool
                        ) -> relax.Function:
    """`group` followed by the elementwise `steps` and the packer: returns the packed planes, or with
    keep_float (something else reads the group's float output) (that output, packed)."""
    (block,) = group.body.blocks
    bindings = list(block.bindings)
    value = group.body.body
    for step in steps:
        out = relax.Var(step.var.name, step.value.ty)
        bindings.append(relax.VarBinding(out, relax.call_tir(step.value.args[0], [value], step.value.ty)))
        value = out
    thresholds = relax.Var("pack_thresholds", pack_call.args[1].fields[1].ty)
    packed = relax.Var("packed", pack_call.ty)
    bindings.append(relax.VarBinding(packed, relax.call_tir(pack_call.args[0], [value, thresholds], pack_call.ty)))
    result, ret_ty = packed, pack_call.ty
    if keep_float:
        result, ret_ty = relax.Tuple([group.body.body, packed]), relax.TupleType([group.ret_ty, pack_call.ty])
    body = relax.SeqExpr([relax.DataflowBlock(bindings)], result)
    return relax.Function(list(group.params) + [thresholds], body, ret_ty, attrs=group.attrs)


def _uses(func: relax.Function) -> dict:
    """var -> number of places that read it (bindings and the function's result)."""
    counts: dict = {}

    def count(expr):
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    for block in func.body.blocks:
        for binding in block.bindings:
            relax.analysis.post_order_visit(binding.value, count)
    relax.analysis.post_order_visit(func.body.body, count)
    return counts


@tvm.transform.module_pass(opt_level=0, name="FusePackIntoEpilogue")
def fuse_pack_into_epilogue(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    main = mod["main"]
    uses = _uses(main)
    producers = {b.var: b for block in main.body.blocks for b in block.bindings}
    # the group's binding -> (elementwise steps, the pack binding, keep the group's float output?)
    plans: dict = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            if _call_tir_kernel(mod, binding.value) != "pack":
                continue
            steps, producer = [], producers.get(binding.value.args[1].fields[0])
            while producer is not None and _elementwise_step(mod, producer, uses):
                steps.insert(0, producer)
                producer = producers.get(producer.value.args[1].fields[0])
            if producer is None or producer.var in plans or not isinstance(producer.value, relax.Call):
                continue
            if _is_bitserial_group(mod, producer.value.op):
                plans[producer.var] = (steps, binding, uses.get(producer.var, 0) > 1)
    if not plans:
        return mod

    builder = relax.BlockBuilder(mod)
    groups: dict = {}        # (group, steps, packer, keep_float) -> (new group GlobalVar, its return type)
    replaced: dict = {}      # pack binding var -> expression of the packed planes
    new_blocks = []
    for block in main.body.blocks:
        bindings = []
        for binding in block.bindings:
            if binding.var in replaced:
                bindings.append(relax.VarBinding(binding.var, replaced[binding.var]))
                continue
            if binding.var not in plans:
                bindings.append(binding)
                continue
            steps, pack_binding, keep_float = plans[binding.var]
            pack_call = pack_binding.value
            key = (binding.value.op, tuple(step.value.args[0] for step in steps), pack_call.args[0], keep_float)
            if key not in groups:
                func = _group_with_packing(mod[binding.value.op], steps, pack_call, keep_float)
                groups[key] = builder.add_func(func, binding.value.op.name_hint + "_pack"), func.ret_ty
            gv, ret_ty = groups[key]
            call = relax.Call(gv, list(binding.value.args) + [pack_call.args[1].fields[1]])
            if keep_float:
                both = relax.Var(binding.var.name + "_and_packed", ret_ty)
                bindings.append(relax.VarBinding(both, call))
                bindings.append(relax.VarBinding(binding.var, relax.TupleGetItem(both, 0)))
                replaced[pack_binding.var] = relax.TupleGetItem(both, 1)
            else:
                replaced[pack_binding.var] = call
        new_blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                          else relax.BindingBlock(bindings))
    new_main = relax.Function(main.params, relax.SeqExpr(new_blocks, main.body.body), main.ret_ty,
                              main.is_pure, main.attrs)
    mod = builder.get()
    mod["main"] = new_main
    return relax.transform.DeadCodeElimination(["main"])(relax.transform.Normalize()(mod))
