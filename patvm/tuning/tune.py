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

import contextlib
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from patvm.errors import PatvmError
from patvm.targets import TargetSpec, resolve_target
from patvm.tensor_intrinsics import cpu_tensor_intrinsics, needs_tensor_intrinsics
from patvm.tuning import database as dbmod
from patvm.tuning.progress import Progress, format_elapsed, format_ms
from patvm.tuning.tasks import TuningTask, extract_tasks, hand_schedule, prepared_module
from patvm.tuning.workers import build_module

LOG_DIR = "logs"
LOG_FILE = "tune.log"


@dataclass
class SearchOptions:
    """Knobs of the search; the defaults suit real tuning, tests shrink them."""
    per_iter: int = 16                  # candidates measured per batch (and per checkpoint)
    population: int = 512               # evolutionary search population
    evolve_iters: int = 4               # genetic iterations per batch
    xgb_early_stopping: int = 50        # XGBoost boosting rounds without improvement before it stops
    number: int = 5                     # runs per measurement ...
    repeat: int = 3                     # ... measurements per candidate (run_secs has `repeat` values)
    min_repeat_ms: int = 40
    build_timeout: float = 60.0
    run_timeout: float = 30.0
    session_timeout: float = 60.0       # RPC session per candidate
    seed: int = 0
    verify_top: int = 3                 # best searched candidates re-measured against the hand schedule
    verify_rounds: int = 2              # interleaved rounds of that re-measurement


@dataclass
class TaskResult:
    name: str
    weight: int
    shash: str
    trials: int                          # searched records in the database for this task
    new_trials: int                      # of which measured by this run
    hand: float | None                   # seconds, hand schedule
    tuned: float | None                  # seconds, best searched record

    @property
    def best(self) -> float | None:
        values = [v for v in (self.hand, self.tuned) if v is not None and math.isfinite(v)]
        return min(values) if values else None

    @property
    def speedup(self) -> float | None:
        if self.hand is None or self.tuned is None or not math.isfinite(self.hand) or not math.isfinite(self.tuned):
            return None
        return self.hand / self.tuned

    @property
    def applied(self) -> str:
        if self.best is None:
            return "hand (no record)"
        return "tuned" if self.tuned is not None and self.best == self.tuned else "hand"


@dataclass
class TuneReport:
    folder: Path
    target: str
    device: str
    tasks: list[TaskResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def table(self) -> str:
        name_width = max([len("task")] + [min(44, len(t.name)) for t in self.tasks])
        head = (f"{'task':<{name_width}}  {'calls':>5}  {'trials':>6}  {'untuned (hand)':>14}  {'tuned':>10}  "
                f"{'speed-up':>8}  build uses")
        rows = [f"tuning database {self.folder} for target {self.target}, measured {self.device}", head,
                "-" * len(head)]
        for t in self.tasks:
            name = t.name if len(t.name) <= name_width else t.name[: name_width - 3] + "..."
            speed = f"{t.speedup:.2f}x" if t.speedup is not None else "-"
            rows.append(f"{name:<{name_width}}  {t.weight:>5}  {t.trials:>6}  {format_ms(t.hand):>14}  "
                        f"{format_ms(t.tuned):>10}  {speed:>8}  {t.applied}")
        hand_total = sum(t.weight * t.hand for t in self.tasks if t.hand is not None and math.isfinite(t.hand))
        best_total = sum(t.weight * t.best for t in self.tasks if t.best is not None)
        if all(t.hand is not None and math.isfinite(t.hand) for t in self.tasks) and best_total > 0:
            rows.append("-" * len(head))
            rows.append(f"{'all kernels x calls':<{name_width}}  {'':>5}  {'':>6}  {format_ms(hand_total):>14}  "
                        f"{format_ms(best_total):>10}  {hand_total / best_total:>7.2f}x  (best of both per task)")
        rows.append(f"{sum(t.new_trials for t in self.tasks)} new trials in {format_elapsed(self.seconds)}"
                    + (" (interrupted: run the same command to resume)" if self.interrupted else ""))
        return "\n".join(rows)

    def as_dict(self) -> dict:
        return {"folder": str(self.folder), "target": self.target, "device": self.device,
                "seconds": self.seconds, "interrupted": self.interrupted,
                "tasks": [dict(name=t.name, weight=t.weight, workload=t.shash, trials=t.trials,
                               new_trials=t.new_trials, untuned_ms=_ms(t.hand), tuned_ms=_ms(t.tuned),
                               speedup=t.speedup, applied=t.applied) for t in self.tasks]}


def _ms(seconds):
    return None if seconds is None or not math.isfinite(seconds) else seconds * 1e3


# ------------------------------------------------------------------------------------------ plumbing


@contextlib.contextmanager
def _logs_to_file(folder: Path):
    """MetaSchedule's loggers (and patvm's task loggers) write to DIR/logs/tune.log only."""
    log_dir = folder / LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / LOG_FILE, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    names = ["tvm.s_tir.meta_schedule", "patvm.tuning.search"]
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, list(logger.handlers)))
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if name.startswith("patvm") else logging.INFO)
        logger.propagate = False
    try:
        yield logging.getLogger("patvm.tuning.search")
    finally:
        for logger, level, propagate, handlers in saved:
            logger.removeHandler(handler)
            for h in handlers:
                logger.addHandler(h)
            logger.setLevel(level)
            logger.propagate = propagate
        handler.close()


@contextlib.contextmanager
def _environment(**values):
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is not None:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _sigint_seen(progress):
    """Ctrl-C once: finish the batch in flight, save it, stop (checked at each checkpoint and between
    steps). Ctrl-C twice: exit at once with 130, losing only the batch in flight (every finished batch is
    already on disk; the workers exit when their pipes close; the kernel drops the folder lock).

    Not a KeyboardInterrupt raised from the handler: MetaSchedule's C++ search polls Python's signal
    handlers, and an exception raised there ends in std::terminate (a segfault report, TVM 0.27)."""
    state = {"seen": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if state["seen"]:
            try:
                progress.message("patvm: interrupted at once; the finished batches are saved, run the same "
                                 "command to resume")
            finally:
                os._exit(130)
        state["seen"] = True
        progress.message("patvm: stopping after the batch in flight (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_if_asked(sigint) -> None:
    if sigint is not None and sigint["seen"]:
        raise KeyboardInterrupt


def _local_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _target_cores(spec: TargetSpec) -> int:
    cores = spec.target.get("num-cores")
    if spec.is_cpu and not cores:
        raise PatvmError(f"target {spec.name} has no 'num-cores': MetaSchedule needs it for CPU targets "
                         "(add it to the target JSON)")
    return int(cores or _local_cores())


def _make_builder(spec: TargetSpec, options: SearchOptions):
    from tvm.s_tir import meta_schedule as ms
    target = spec.tvm_target()
    kwargs = dict(max_workers=_local_cores(), timeout_sec=options.build_timeout)
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


def _check_runnable(spec: TargetSpec, rpc_tracker) -> None:
    if not rpc_tracker and not spec.runs_here():
        raise PatvmError(f"code for target {spec.name} does not run on this machine: tune on the board through "
                         "an RPC tracker (--rpc-tracker HOST:PORT --rpc-key KEY; see `patvm rpc --help`)")


def _make_runner(spec: TargetSpec, options: SearchOptions, rpc_tracker, rpc_key):
    from tvm.s_tir import meta_schedule as ms
    if rpc_tracker:
        from patvm.tuning.rpc import make_rpc_runner
        return make_rpc_runner(rpc_tracker, rpc_key, _evaluator(options), options.session_timeout)
    _check_runnable(spec, rpc_tracker)
    return ms.runner.LocalRunner(evaluator_config=_evaluator(options), timeout_sec=options.run_timeout)


class _Machines:
    """Builder and runner, made on first use (each starts worker processes: a resumed run with nothing
    left to do never pays for them)."""

    def __init__(self, spec, options, rpc_tracker, rpc_key):
        self._args = (spec, options, rpc_tracker, rpc_key)
        self._builder = self._runner = None

    @property
    def builder(self):
        if self._builder is None:
            self._builder = _make_builder(*self._args[:2])
        return self._builder

    @property
    def runner(self):
        if self._runner is None:
            self._runner = _make_runner(*self._args)
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


def _measure(builder, runner, target, items: list, rounds: int = 1) -> list:
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
                if not secs or dbmod.record_seconds(secs) == math.inf:
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


def _verify(tasks, meta, store, machines, tvm_target, options, progress, log, ms, sigint) -> None:
    """Measure each task's hand schedule and its best searched candidates again, back to back, and keep
    those measurements: which of them the build uses is then decided by numbers taken under the same
    conditions (measurements minutes apart on a shared machine differ by more than the speed-ups).

    Repeated (at most 3 times) while a record that was not part of the last comparison is the fastest:
    its older measurement may just have been taken at a quieter moment."""
    if options.verify_top <= 0:
        return
    notes = meta["tasks"]
    pending = [t for t in tasks if notes[t.shash].get("verified") != len(store.entries_for(t.mod))]
    compared: dict[str, set] = {t.shash: set() for t in pending}
    for attempt in range(3):
        todo = []
        for task in pending:
            note = notes[task.shash]
            entries = [e for e in store.entries_for(task.mod) if math.isfinite(e.seconds)]
            hand = [e for e in entries if e.trace_key == note.get("hand")]
            searched = sorted((e for e in entries if e.trace_key != note.get("hand")), key=lambda e: e.seconds)
            if not hand or not searched:
                continue
            if attempt > 0 and min(entries, key=lambda e: e.seconds).trace_key in compared[task.shash]:
                continue                              # the fastest was part of the last comparison: done
            todo.append((task, [hand[0]] + searched[:options.verify_top]))
        if not todo:
            break
        count = sum(len(c) for _, c in todo)
        progress.message(f"comparing the hand schedule with the best candidates again, back to back: "
                         f"{count} kernels of {len(todo)} task(s), {options.verify_rounds} rounds ...")
        items, owners = [], []
        for task, chosen in todo:
            workload = ms.database.Workload(task.mod)
            compared[task.shash] = {e.trace_key for e in chosen}
            for entry in chosen:
                candidate = ms.database.TuningRecord.from_json(entry.payload, workload).as_measure_candidate()
                items.append((candidate.sch.mod, candidate.args_info))
                owners.append((task, entry))
        measured = _measure(machines.builder, machines.runner, tvm_target, items, rounds=options.verify_rounds)
        for (task, entry), secs in zip(owners, measured):
            old = entry.seconds
            entry.payload[1] = secs if secs is not None else [1e10]
            log.info("%s: re-measured %s %.4f ms -> %s", task.name,
                     "hand schedule" if entry.trace_key == notes[task.shash].get("hand") else "candidate",
                     old * 1e3, f"{entry.seconds * 1e3:.4f} ms" if secs else "failed")
        for task, chosen in todo:
            if math.isfinite(chosen[0].seconds):
                notes[task.shash]["hand_ms"] = chosen[0].seconds * 1e3
        dbmod.write_meta(store.folder, meta)
        store.flush(force=True)
        _stop_if_asked(sigint)
    for task in pending:
        notes[task.shash]["verified"] = len(store.entries_for(task.mod))
    dbmod.write_meta(store.folder, meta)


def _warm_start(cost_model, context, store, task, log, ms) -> None:
    """On a resumed run, train the cost model on the measurements DIR already holds for this task (a fresh
    XGBoost model would otherwise steer the first batch at random)."""
    try:
        workload = store.database.commit_workload(task.mod)
        records = store.database.get_top_k(workload, 1 << 20)
        if records:
            cost_model.update(context, [r.as_measure_candidate() for r in records],
                              [ms.runner.RunnerResult(run_secs=r.run_secs, error_msg=None) for r in records])
            log.info("cost model warmed up with %d records of %s", len(records), task.name)
    except Exception as exc:  # noqa: BLE001 - only an optimisation: search on with a cold model
        log.warning("cost model warm start failed for %s: %s", task.name, exc)


def _checkpoint_callback(on_batch):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Checkpoint(PyMeasureCallback):
        """After AddToDatabase: write the batch to DIR atomically, update the progress line."""

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            on_batch()

    return Checkpoint()


# ------------------------------------------------------------------------------------------ tuning


def tune_model(model, target="host", trials: int = 64, db="tuning", *, rpc_tracker: str | None = None,
               rpc_key: str | None = None, strategy: str = "auto", options: SearchOptions | None = None,
               progress: Progress | None = None, only: str | None = None) -> TuneReport:
    """Tune every task of `model` for `target` to `trials` searched records each, in folder `db`.

    Re-running continues: tasks keep the records `db` holds and only the missing trials run.
    `only`: tune just the tasks whose name contains this text (the others are listed, not searched)."""
    from tvm.s_tir import meta_schedule as ms

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
    cores = _target_cores(spec)
    folder = Path(db)
    started = time.monotonic()
    tvm_target = spec.tvm_target()
    device = f"through RPC key '{rpc_key}' at {rpc_tracker}" if rpc_tracker else "on this machine"
    report = TuneReport(folder, spec.name, device)

    with dbmod.locked(folder), cpu_tensor_intrinsics(tvm_target):
        meta = dbmod.read_meta(folder)
        key = dbmod.target_key(spec.target)
        if meta.get("target") is not None and dbmod.target_key(meta["target"]) != key:
            raise PatvmError(f"{folder} holds records for target {dbmod.target_key(meta['target'])}, not "
                             f"{key}: use another --db folder per target")
        _check_runnable(spec, rpc_tracker)
        if rpc_tracker:
            from patvm.tuning.rpc import check_tracker
            check_tracker(rpc_tracker, rpc_key)
        mod = prepared_module(model, spec, strategy, db_dir=folder if (folder / "strategies.json").is_file() else None)
        tasks = extract_tasks(mod, spec)
        if not tasks:
            raise PatvmError("the model has no kernel to tune")
        store = dbmod.TuningStore(folder)
        meta["target"] = spec.target
        progress = progress or Progress(len(tasks))
        progress.total_tasks = len(tasks)
        threads = os.environ.get("TVM_NUM_THREADS") or str(cores if not rpc_tracker else _local_cores())
        with _logs_to_file(folder) as log, _environment(TVM_NUM_THREADS=threads):
            machines = _Machines(spec, options, rpc_tracker, rpc_key)
            try:
                with _sigint_seen(progress) as sigint:
                    try:
                        report.tasks = _tune_tasks(tasks, spec, tvm_target, trials, store, meta, machines,
                                                   options, progress, log, only, cores, ms, sigint)
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


def _tune_tasks(tasks: list[TuningTask], spec, tvm_target, trials, store, meta, machines, options,
                progress, log, only, cores, ms, sigint=None) -> list[TaskResult]:
    notes = meta.setdefault("tasks", {})
    # 1. hand-schedule baselines, measured once, in one batch
    missing = []
    for task in tasks:
        note = notes.setdefault(task.shash, {})
        note.update(name=note.get("name", task.name), weight=task.weight)
        if only is not None and only not in task.name:
            continue
        hand_key = note.get("hand")
        if hand_key and any(e.trace_key == hand_key for e in store.entries_for(task.mod)):
            continue
        sch = hand_schedule(task, spec)
        if sch is not None:
            missing.append((task, sch))
    if missing:
        progress.message(f"measuring the hand schedules of {len(missing)} task(s) as the untuned baseline ...")
        measured = _measure(machines.builder, machines.runner, tvm_target,
                            [(sch.mod, ms.arg_info.ArgInfo.from_prim_func(task.func)) for task, sch in missing])
        for (task, sch), secs in zip(missing, measured):
            if secs is None:
                notes[task.shash]["hand"] = None
                log.warning("hand schedule of %s failed to build or run", task.name)
                continue
            workload = store.database.commit_workload(task.mod)
            record = ms.database.TuningRecord(sch.trace, workload, secs, tvm_target,
                                              ms.arg_info.ArgInfo.from_prim_func(task.func))
            entry = store.commit(record)
            notes[task.shash]["hand"] = entry.trace_key
            notes[task.shash]["hand_ms"] = entry.seconds * 1e3
        # the note first: a record file with a hand record the note does not name would count it as a trial
        dbmod.write_meta(store.folder, meta)
        store.flush()
        _stop_if_asked(sigint)

    # 2. the search, task by task
    progress_rows = []
    cost_model = ms.cost_model.XGBModel(extractor=ms.feature_extractor.PerStoreFeature(),
                                        adaptive_training=True, num_tuning_cores=_local_cores(),
                                        early_stopping_rounds=options.xgb_early_stopping)
    for index, task in enumerate(tasks, start=1):
        _stop_if_asked(sigint)
        note = notes[task.shash]
        entries = store.entries_for(task.mod)
        hand_entries = [e for e in entries if note.get("hand") and e.trace_key == note["hand"]]
        searched = [e for e in entries if e not in hand_entries]
        hand = min((e.seconds for e in hand_entries), default=None)
        state = {"done": len(searched), "best": min((e.seconds for e in searched), default=math.inf)}
        before = state["done"]
        remaining = max(0, trials - state["done"])
        selected = only is None or only in task.name
        progress.start_task(index, task.name, state["done"], trials if selected else state["done"],
                            state["best"], hand, "" if selected else "skipped (--only)")
        if selected and remaining > 0:
            def on_batch(task=task, state=state, note=note):
                new = [e for e in store.flush() if e.trace_key != note.get("hand")]
                if new:
                    state["done"] += len(new)
                    state["best"] = min([state["best"]] + [e.seconds for e in new])
                    progress.update(done=state["done"], best=state["best"])
                _stop_if_asked(sigint)

            context = ms.TuneContext(
                mod=task.mod, target=tvm_target, space_generator="post-order-apply",
                search_strategy=ms.search_strategy.EvolutionarySearch(
                    population_size=options.population, genetic_num_iters=options.evolve_iters,
                    init_min_unmeasured=min(50, options.population)),
                task_name=task.name, logger=logging.getLogger(f"patvm.tuning.search.task{index}"),
                rand_state=(options.seed * 7919 + index * 104729 + state["done"]) % (2 ** 31 - 1),
                num_threads=cores).clone()
            log.info("task %d %s: %d trials in the database, %d to go", index, task.name, state["done"], remaining)
            if entries:
                _warm_start(cost_model, context, store, task, log, ms)
            ms.tune_tasks(
                tasks=[context], task_weights=[1.0], work_dir=str(store.folder / LOG_DIR),
                max_trials_global=remaining, max_trials_per_task=remaining,
                num_trials_per_iter=max(1, min(options.per_iter, remaining)),
                builder=machines.builder, runner=machines.runner, database=store.database, cost_model=cost_model,
                measure_callbacks=[ms.measure_callback.AddToDatabase(), _checkpoint_callback(on_batch),
                                   ms.measure_callback.RemoveBuildArtifact(), ms.measure_callback.UpdateCostModel()],
                task_scheduler="round-robin")
            on_batch()
        progress.end_task()
        progress_rows.append((task, state["done"], state["done"] - before))

    # 3. the final comparison, back to back
    _verify([t for t, _, _ in progress_rows if only is None or only in t.name], meta, store, machines,
            tvm_target, options, progress, log, ms, sigint)
    results = []
    for task, done, new in progress_rows:
        note = notes[task.shash]
        entries = store.entries_for(task.mod)
        hand = min((e.seconds for e in entries if e.trace_key == note.get("hand")), default=None)
        best = min((e.seconds for e in entries if e.trace_key != note.get("hand")), default=math.inf)
        results.append(TaskResult(task.name, task.weight, task.shash, done, new,
                                  hand if hand is not None and math.isfinite(hand) else None,
                                  best if math.isfinite(best) else None))
    return results
