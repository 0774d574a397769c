"""`patvm tune`: MetaSchedule search per task, resumable, with a hand-schedule baseline in the database.

For each task (a fused PrimFunc of the prepared module, see `patvm.tuning.tasks`):

  1. the hand schedule (what `patvm compile` uses without a database) is built and measured with the same
     builder and runner as the search, once, and stored as a record: the database then always holds the
     best *measured* schedule, so applying it never makes a kernel slower than the untuned build;
  2. MetaSchedule's evolutionary search with the XGBoost cost model runs the trials still missing
     (`--trials` per task minus the searched records DIR already holds), one task at a time;
  3. after every measured batch the records are written to DIR atomically (`TuningStore.flush`), so an
     interrupted run loses at most the batch in flight and the same command resumes it.

The report compares, per task, the hand-scheduled latency with the best searched one, both measured by
the runner (locally, or on the board through the RPC tracker).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from patvm.errors import PatvmError
from patvm.host import usable_cores
from patvm.targets import resolve_target, target_key
from patvm.tensor_intrinsics import cpu_tensor_intrinsics
from patvm.tuning import database as dbmod
from patvm.tuning.machines import Machines, check_runnable, target_cores
from patvm.tuning.options import SearchOptions
from patvm.tuning.progress import TuningProgress
from patvm.tuning.report import TaskResult, TuneReport
from patvm.tuning.search import TuningRun, search_tasks
from patvm.tuning.session import LOG_DIR, LOG_FILE, environment, logs_to_file, sigint_seen
from patvm.tuning.tasks import extract_tasks, prepared_module

__all__ = ["LOG_DIR", "LOG_FILE", "SearchOptions", "TaskResult", "TuneReport", "tune_model"]


def tune_model(model, target="host", trials: int = 64, db="tuning", *, rpc_tracker: str | None = None,
               rpc_key: str | None = None, strategy: str = "auto", options: SearchOptions | None = None,
               progress: TuningProgress | None = None, only: str | None = None) -> TuneReport:
    """Tune every task of `model` for `target` to `trials` searched records each, in folder `db`.

    Re-running continues: tasks keep the records `db` holds and only the missing trials run.
    `only`: tune just the tasks whose name contains this text (the others are listed, not searched)."""
    options = options or SearchOptions()
    try:
        # imported now, not lazily in the middle of the search (slow, and a Ctrl-C landing in an import
        # of xgboost -> sklearn -> scipy would be reported as an unhandled KeyboardInterrupt at exit)
        import xgboost  # noqa: F401
    except ImportError as exc:
        raise PatvmError(f"patvm tune needs xgboost (MetaSchedule's cost model): pip install xgboost ({exc})") from exc
    if trials < 0:
        raise PatvmError("--trials must be >= 0")
    if bool(rpc_tracker) != bool(rpc_key):
        raise PatvmError("--rpc-tracker and --rpc-key go together")
    if isinstance(model, (str, os.PathLike)) and not os.path.isfile(model):
        raise PatvmError(f"no such model: {os.fspath(model)}")
    spec = resolve_target(target)
    cores = target_cores(spec)
    folder = Path(db)
    started = time.monotonic()
    tvm_target = spec.tvm_target()
    device = f"through RPC key '{rpc_key}' at {rpc_tracker}" if rpc_tracker else "on this machine"
    report = TuneReport(folder, spec.name, device)

    with dbmod.locked(folder), cpu_tensor_intrinsics(tvm_target):
        meta = dbmod.read_meta(folder)
        key = target_key(spec.target)
        if meta.get("target") is not None and target_key(meta["target"]) != key:
            raise PatvmError(f"{folder} holds records for target {target_key(meta['target'])}, not "
                             f"{key}: use another --db folder per target")
        check_runnable(spec, rpc_tracker)
        if rpc_tracker:
            from patvm.tuning.rpc import check_tracker
            check_tracker(rpc_tracker, rpc_key)
        mod = prepared_module(model, spec, strategy, db_dir=folder)   # its strategies.json, if any
        tasks = extract_tasks(mod, spec)
        if not tasks:
            raise PatvmError("the model has no kernel to tune")
        store = dbmod.TuningStore(folder)
        meta["target"] = spec.target
        progress = progress or TuningProgress(len(tasks))
        progress.total_tasks = len(tasks)
        threads = os.environ.get("TVM_NUM_THREADS") or str(cores if not rpc_tracker else usable_cores())
        with logs_to_file(folder) as log, environment(TVM_NUM_THREADS=threads):
            machines = Machines(spec, options, rpc_tracker, rpc_key)
            try:
                with sigint_seen(progress) as sigint:
                    try:
                        run = TuningRun(spec, tvm_target, trials, store, meta, machines, options, progress, log,
                                        only, cores, sigint)
                        report.tasks = search_tasks(run, tasks)
                    except Exception:
                        # Ctrl-C inside one of MetaSchedule's Python callbacks comes back through TVM's
                        # C++ layer as another exception type
                        if sigint["seen"]:
                            raise KeyboardInterrupt from None
                        raise
            except KeyboardInterrupt:
                report.interrupted = True
                store.flush()
                dbmod.write_meta(folder, meta)
                progress.close()
                progress.message(f"interrupted: {len(store.entries)} records are safe in {folder}; "
                                 "run the same command to resume")
                raise
            finally:
                store.flush()
                dbmod.write_meta(folder, meta)
                progress.close()
                machines.close()
    report.seconds = time.monotonic() - started
    return report
