"""Fused glue: the next layer's quantize-and-pack joins the bit-serial layer's epilogue.

After FuseOps, a binary layer is one group function (bit-serial conv + bias / BatchNorm / residual add /
ReLU) whose float output usually goes straight into the packer of the next binary layer. FuseOps cannot
join them (the packer is a reduction over channel bits, not elementwise), so this pass does, before
FuseTIR: the group also calls the packer and returns the packed planes -- and the float tensor too when
something else still reads it (a residual add). FuseTIR then makes one PrimFunc, and the CPU schedule packs
each output row right after computing it, while it is still in cache (Riptide's "fused glue", Larq Compute
Engine's output transform).
"""
from __future__ import annotations

import tvm
from tvm import relax

from patvm.compiler.lower import PATVM_KERNEL_ATTR


def _kernel(mod: tvm.IRModule, callee) -> str | None:
    """patvm's kernel name of a call_tir target, if it is one of patvm's PrimFuncs."""
    if not isinstance(callee, relax.GlobalVar) or callee not in mod.functions:
        return None
    func = mod[callee]
    return str(func.attrs[PATVM_KERNEL_ATTR]) if func.attrs is not None and PATVM_KERNEL_ATTR in func.attrs else None


def _call_tir_kernel(mod: tvm.IRModule, expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
        return _kernel(mod, expr.args[0])
    return None


def _is_bitserial_group(mod: tvm.IRModule, callee) -> bool:
    """A FuseOps group function holding a bit-serial conv and returning one tensor."""
    if not isinstance(callee, relax.GlobalVar) or callee not in mod.functions:
        return False
    func = mod[callee]
    if not isinstance(func, relax.Function) or func.attrs is None or "Primitive" not in func.attrs:
        return False
    if not isinstance(func.ret_ty, relax.TensorType) or len(func.body.blocks) != 1:
        return False
    return any(_call_tir_kernel(mod, b.value) == "bitserial_conv2d" for b in func.body.blocks[0].bindings)


def _group_with_packing(group: relax.Function, pack_call: relax.Call, keep_float: bool) -> relax.Function:
    """`group` extended by the packer on its output: returns packed, or (float, packed) with keep_float."""
    (block,) = group.body.blocks
    thresholds = relax.Var("pack_thresholds", pack_call.args[1].fields[1].ty)
    packed = relax.Var("packed", pack_call.ty)
    call = relax.call_tir(pack_call.args[0], [group.body.body, thresholds], pack_call.ty)
    bindings = list(block.bindings) + [relax.VarBinding(packed, call)]
    result = relax.Tuple([group.body.body, packed]) if keep_float else packed
    ret_ty = relax.TupleType([group.ret_ty, pack_call.ty]) if keep_float else pack_call.ty
    body = relax.SeqExpr([relax.DataflowBlock(bindings)], result)
    return relax.Function(list(group.params) + [thresholds], body, ret_ty, attrs=group.attrs)


def func_ret_ty(builder: relax.BlockBuilder, gv: relax.GlobalVar):
    return builder.get()[gv].ret_ty


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
    # the float output's binding -> (the pack binding, keep the float output?)
    plans: dict = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if _call_tir_kernel(mod, call) != "pack":
                continue
            source = call.args[1].fields[0]
            producer = producers.get(source)
            if producer is None or producer.var in plans or not isinstance(producer.value, relax.Call):
                continue
            if _is_bitserial_group(mod, producer.value.op):
                plans[producer.var] = (binding, uses.get(source, 0) > 1)
    if not plans:
        return mod

    builder = relax.BlockBuilder(mod)
    groups: dict = {}        # (group, packer, keep_float) -> new group GlobalVar
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
            pack_binding, keep_float = plans[binding.var]
            pack_call = pack_binding.value
            key = (binding.value.op, pack_call.args[0], keep_float)
            if key not in groups:
                func = _group_with_packing(mod[binding.value.op], pack_call, keep_float)
                groups[key] = builder.add_func(func, binding.value.op.name_hint + "_pack")
            args = list(binding.value.args) + [pack_call.args[1].fields[1]]
            call = relax.Call(groups[key], args)
            if keep_float:
                both = relax.Var(binding.var.name_hint + "_and_packed", func_ret_ty(builder, groups[key]))
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
