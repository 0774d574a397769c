"""Phase 4b, build: Relax legalisation and fusion, schedules, and `tvm.compile` for the target.

The same `prepare_passes` run before tuning-task extraction and before the build, so MetaSchedule
records (keyed by the structural hash of the fused PrimFuncs) are found: tasks cut from the unprepared
module would hash differently and their records would never apply, without an error.
"""
from __future__ import annotations

import tvm
from tvm import relax

from patvm.compiler.elementwise_quantizers import quantizers_as_elementwise
from patvm.compiler.fold_batchnorm import fold_batchnorm_into_conv2d
from patvm.compiler.fuse_packing import fuse_pack_into_epilogue
from patvm.compiler.layout import blocked_layout_pass, conv2d_legalization, plain_elementwise
from patvm.compiler.legalize import PATVM_LEGALIZATIONS
from patvm.compiler.schedules import schedule_pass
from patvm.compiler.weight_codes import stores_weight_codes
from patvm.targets import TargetSpec
from patvm.tensor_intrinsics import cpu_tensor_intrinsics


def prepare_passes(spec: TargetSpec) -> list:
    """Legalise and fuse: after these, each PrimFunc is one tuning task / one kernel."""
    cpu = spec.family != "cuda"
    # the CUDA schedules expect the float output as the kernel's last block: packing stays a kernel there
    fuse_packing = [fuse_pack_into_epilogue] if cpu else []
    legalizations = {**PATVM_LEGALIZATIONS, **({"relax.nn.conv2d": conv2d_legalization()} if cpu else {})}
    return [
        fold_batchnorm_into_conv2d,
        relax.transform.FoldConstant(),          # the scaled weights, where they are constants
        quantizers_as_elementwise,
        relax.transform.DecomposeOpsForInference(),
        # BatchNorm decomposes to a tuple (out, mean, var); dropping the dead tuple lets FuseOps fold the
        # normalisation and the ReLU after it into the conv's epilogue
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
        *([blocked_layout_pass(), plain_elementwise] if cpu else []),
        relax.transform.LegalizeOps(legalizations),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        lift_weight_expansion,
        relax.transform.FuseOps(),
        *fuse_packing,
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]


@tvm.transform.module_pass(opt_level=0, name="LiftWeightExpansion")
def lift_weight_expansion(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Weights stored as codes (patvm.compiler.weight_codes): their expansion and the weight transforms
    after it move to `main_transform_params`, run once when the module is loaded; before FuseOps, so no
    weight transform is fused into a kernel that runs every inference."""
    if not stores_weight_codes(mod):
        return mod
    return relax.transform.LiftTransformParams()(mod)


def main_kernels(mod: tvm.IRModule) -> tvm.IRModule:
    """The module without what runs once at load time: the kernels of an inference (tuning tasks)."""
    return relax.transform.DeadCodeElimination(["main"])(mod)


def prepare(mod: tvm.IRModule, spec: TargetSpec) -> tvm.IRModule:
    with spec.tvm_target():
        return tvm.transform.Sequential(prepare_passes(spec))(mod)


def apply_tuning_database(mod: tvm.IRModule, spec: TargetSpec, database) -> tvm.IRModule:
    target = spec.tvm_target()
    with target, database, cpu_tensor_intrinsics(target):   # a record's trace may tensorize (VNNI)
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)


def is_scheduled(func) -> bool:
    """Whether a PrimFunc is already scheduled: MetaScheduleApplyDatabase marks those it found a record for."""
    return bool(func.attrs is not None and func.attrs.get("tirx.is_scheduled", False))


def kernel_names(mod: tvm.IRModule, scheduled: bool | None = None) -> list[str]:
    """The module's PrimFuncs; scheduled=True / False: only those already scheduled / not yet."""
    return sorted(gv.name_hint for gv, func in mod.functions_items()
                  if isinstance(func, tvm.tirx.PrimFunc) and scheduled in (None, is_scheduled(func)))


def vm_lowering_passes(spec: TargetSpec) -> list:
    """TVM's passes from a legalised, fused, scheduled Relax module to VM code: on CPUs tvm.compile's
    default pipeline without its LegalizeOps (prepare_passes legalised everything already); on CUDA
    TVM's CUDA pipeline whole (its legalisation and DLight fallback schedules see patvm's fused module,
    as they always did)."""
    if spec.family == "cuda":
        return [relax.get_default_pipeline(spec.tvm_target())]
    t = relax.transform
    return [
        relax.backend.DispatchSampling(), relax.backend.DispatchSortScan(),
        t.RewriteDataflowReshape(), t.ToNonDataflow(), t.RemovePurityChecking(), t.CallTIRRewrite(),
        t.StaticPlanBlockMemory(), t.RewriteCUDAGraph(), t.LowerAllocTensor(), t.KillAfterLastUse(),
        t.LowerRuntimeBuiltin(), t.ComputePrimValue(), t.VMShapeLower(), t.AttachGlobalSymbol(),
    ]


def relax_pipeline(spec: TargetSpec) -> tvm.transform.Pass:
    """What tvm.compile runs on a prepared module (after the tuning records): patvm's hand schedules for the
    target family, then TVM's lowering to the VM."""
    return tvm.transform.Sequential([schedule_pass(spec.family), *vm_lowering_passes(spec)],
                                    name="patvm_relax_pipeline")


def build(mod: tvm.IRModule, spec: TargetSpec, database=None):
    """Prepared module -> (tvm Executable, {"kernels": n, "tuned": [names]}). Tuned records first, then
    the hand schedules; "tuned" names the kernels whose record the database held (checked, not assumed)."""
    schedules = {"kernels": len(kernel_names(main_kernels(mod))), "tuned": []}
    if database is not None:
        mod = apply_tuning_database(mod, spec, database)
        schedules["tuned"] = kernel_names(main_kernels(mod), scheduled=True)
    with spec.tvm_target():  # also for tvm.compile: nvcc must build for the preset's arch, not the local GPU
        return tvm.compile(mod, target=spec.tvm_target(), relax_pipeline=relax_pipeline(spec)), schedules
