"""Builder and runner of a tuning run (MetaSchedule's, local or through an RPC tracker) and measuring with
them outside the search (hand schedules, re-measurements)."""
from __future__ import annotations

import contextlib
import math
import os

from patvm.errors import PatvmError
from patvm.host import usable_cores
from patvm.records import record_seconds
from patvm.targets import TargetSpec
from patvm.tensor_intrinsics import needs_tensor_intrinsics
from patvm.tuning.options import SearchOptions
from patvm.tuning.workers import build_module


def target_cores(spec: TargetSpec) -> int:
    cores = spec.target.get("num-cores")
    if spec.is_cpu and not cores:
        raise PatvmError(f"target {spec.name} has no 'num-cores': MetaSchedule needs it for CPU targets "
                         "(add it to the target JSON)")
    return int(cores or usable_cores())


def make_builder(spec: TargetSpec, options: SearchOptions):
    from tvm.s_tir import meta_schedule as ms
    target = spec.tvm_target()
    kwargs = dict(max_workers=usable_cores(), timeout_sec=options.build_timeout)
    if needs_tensor_intrinsics(target):
        return ms.builder.LocalBuilder(**kwargs)
    return _quick_builder_class()(f_build=build_module, **kwargs)


def _quick_builder_class():
    """LocalBuilder without its start-up check (a throw-away process pool that only proves `f_build` can be
    found in a worker: `build_module` is a plain importable function). Saves ~5-10 s per run."""
    global _QUICK_BUILDER
    if _QUICK_BUILDER is None:
        from tvm.ir.utils import derived_object
        from tvm.s_tir import meta_schedule as ms

        @derived_object
        class QuickLocalBuilder(ms.builder.LocalBuilder._cls):
            def _sanity_check(self) -> None:
                return None

        _QUICK_BUILDER = QuickLocalBuilder
    return _QUICK_BUILDER


_QUICK_BUILDER = None


def _evaluator(options: SearchOptions):
    from tvm.s_tir import meta_schedule as ms
    return ms.runner.EvaluatorConfig(number=options.number, repeat=options.repeat,
                                     min_repeat_ms=options.min_repeat_ms, enable_cpu_cache_flush=False)


def check_runnable(spec: TargetSpec, rpc_tracker) -> None:
    if not rpc_tracker and not spec.runs_here():
        raise PatvmError(f"code for target {spec.name} does not run on this machine: tune on the board through "
                         "an RPC tracker (--rpc-tracker HOST:PORT --rpc-key KEY; see `patvm rpc --help`)")


def make_runner(spec: TargetSpec, options: SearchOptions, rpc_tracker, rpc_key):
    from tvm.s_tir import meta_schedule as ms
    if rpc_tracker:
        from patvm.tuning.rpc import make_rpc_runner
        return make_rpc_runner(rpc_tracker, rpc_key, _evaluator(options), options.session_timeout)
    check_runnable(spec, rpc_tracker)
    return ms.runner.LocalRunner(evaluator_config=_evaluator(options), timeout_sec=options.run_timeout)


class Machines:
    """Builder and runner, made on first use (each starts worker processes: a resumed run with nothing
    left to do never pays for them)."""

    def __init__(self, spec, options, rpc_tracker, rpc_key):
        self._args = (spec, options, rpc_tracker, rpc_key)
        self._builder = self._runner = None

    @property
    def builder(self):
        if self._builder is None:
            self._builder = make_builder(*self._args[:2])
        return self._builder

    @property
    def runner(self):
        if self._runner is None:
            self._runner = make_runner(*self._args)
        return self._runner

    def close(self) -> None:
        if self._runner is not None:
            _shutdown(self._runner)


def _shutdown(runner) -> None:
    pool = getattr(runner, "pool", None)
    if pool is not None:
        with contextlib.suppress(Exception):
            pool.shutdown()


def _device_type(target) -> str:
    return "cpu" if target.kind.name == "llvm" else target.kind.name


def measure(builder, runner, target, items: list, rounds: int = 1) -> list:
    """Build [(IRModule, args_info)] once with MetaSchedule's builder, run each `rounds` times with its
    runner, interleaved (a, b, c, a, b, c: load changes hit all alike); run_secs (all rounds) or None each."""
    import shutil

    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput
    built = builder.build([BuilderInput(mod, target) for mod, _ in items])
    results: list = [None] * len(items)
    failed: set = set()
    try:
        for _ in range(rounds):
            for i, ((_, args_info), b) in enumerate(zip(items, built)):
                if b.error_msg is not None or i in failed:
                    continue
                result = runner.run([RunnerInput(b.artifact_path, _device_type(target), args_info)])[0].result()
                secs = [float(s) for s in result.run_secs] if result.error_msg is None and result.run_secs else []
                if not secs or record_seconds(secs) == math.inf:
                    failed.add(i)
                    results[i] = None
                    continue
                results[i] = (results[i] or []) + secs
    finally:
        for b in built:
            if b.error_msg is None:
                with contextlib.suppress(OSError):
                    shutil.rmtree(os.path.dirname(b.artifact_path))
    return results
