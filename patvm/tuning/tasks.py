"""Tuning tasks: the PrimFuncs of a model as the build will see them.

The module is made by the pipeline `patvm compile` uses -- `patvm.compiler.pipeline.Pipeline.prepared`:
import and lowering, then `patvm.compiler.build.prepare` (legalise, annotate, fold, fuse) -- so each task's
IRModule is structurally equal to what `MetaScheduleApplyDatabase` looks up at build time. Tuning the raw
module instead finds nothing at build time, silently: `extract_tasks` neither legalises nor fuses, the
build does, and `AnnotateTIROpPattern` alone changes the structural hash the records are keyed by.
"""
from __future__ import annotations

from dataclasses import dataclass

from patvm.targets import TargetSpec


@dataclass
class TuningTask:
    name: str                 # the fused PrimFunc's name (first one, when several share the workload)
    weight: int               # how many call sites share this workload
    mod: object               # tvm IRModule {"main": PrimFunc}, the lookup key
    shash: str                # structural hash of `mod` (MetaSchedule's workload hash)

    @property
    def func(self):
        return self.mod["main"]


def prepared_module(model, spec: TargetSpec, strategy: str = "auto", db_dir=None):
    """The Relax module right before `build`, made by the compile pipeline itself
    (`patvm.compiler.pipeline.Pipeline.for_tuning`: the same import and lowering, the same per-layer strategy policy
    with the measured choices in `db_dir`, as `--tuning-db` would read them, the same prepare passes)."""
    from patvm.compiler.pipeline import Pipeline
    return Pipeline.for_tuning(spec, db_dir, strategy).prepared(model)[0]


def extract_tasks(mod, spec: TargetSpec) -> list[TuningTask]:
    """One task per distinct unscheduled PrimFunc of a prepared module, in module order."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from patvm.compiler.build import is_scheduled, main_kernels
    from patvm.tensor_intrinsics import cpu_tensor_intrinsics
    tasks = []
    target = spec.tvm_target()
    with cpu_tensor_intrinsics(target):
        extracted = ms.relax_integration.extract_tasks(main_kernels(mod), target)
    for task in extracted:
        task_mod = task.dispatched[0]
        func = task_mod["main"]
        if is_scheduled(func):
            continue
        tasks.append(TuningTask(str(task.task_name), int(task.weight), task_mod,
                                str(tvm_ffi.structural_hash(task_mod))))
    return tasks


def model_workloads(model, target, strategy: str = "auto", db_dir=None) -> set[str]:
    """The workload hashes of the kernels `model` compiles to for `target` (its tuning tasks)."""
    from patvm.targets import resolve_target
    spec = resolve_target(target)
    return {task.shash for task in extract_tasks(prepared_module(model, spec, strategy, db_dir), spec)}


def hand_schedule(task: TuningTask, spec: TargetSpec):
    """patvm's hand schedule for this task as an `s_tir.Schedule` (with its trace), as `build` would
    apply it; an unscheduled Schedule when no rule matches; None when the rules fail."""
    from tvm import s_tir

    from patvm.compiler.schedules import schedule_rules
    target = spec.tvm_target()
    try:
        with target:
            for rule in schedule_rules(spec.family):
                space = rule.apply(task.func, target, False)
                if space is None:
                    continue
                return space[0] if isinstance(space, (list, tuple)) else space
    except Exception:  # noqa: BLE001 - a rule that raises: no hand baseline for this task
        return None
    return s_tir.Schedule(task.mod)
