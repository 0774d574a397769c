"""The search of a tuning run, task by task: the hand schedule measured once as the baseline, MetaSchedule's
evolutionary search for the missing trials (records written after every batch), then the best candidates
re-measured back to back with the hand schedule (`remeasure_best`)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from patvm.host import usable_cores
from patvm.targets import TargetSpec
from patvm.tuning.database import write_meta
from patvm.tuning.machines import Machines, measure
from patvm.tuning.options import SearchOptions
from patvm.tuning.progress import TuningProgress
from patvm.tuning.report import TaskResult
from patvm.tuning.session import LOG_DIR, stop_if_asked
from patvm.tuning.tasks import TuningTask, hand_schedule


@dataclass
class TuningRun:
    """What one tuning run works with: made by `tune_model`, read by the search."""
    spec: TargetSpec
    tvm_target: object              # spec.tvm_target()
    trials: int                     # searched records wanted per task
    store: object                   # patvm.tuning.database.TuningStore of the database folder
    meta: dict                      # patvm's notes beside the database (read_meta / write_meta)
    machines: Machines
    options: SearchOptions
    progress: TuningProgress
    log: logging.Logger
    only: str | None                # search only the tasks whose name contains this
    cores: int                      # the target's cores (MetaSchedule's num_threads)
    sigint: dict | None = None      # session.sigint_seen's state


def remeasure_best(run: TuningRun, tasks: list[TuningTask]) -> None:
    """Measure each task's hand schedule and its best searched candidates again, back to back, and keep
    those measurements: which of them the build uses is then decided by numbers taken under the same
    conditions (measurements minutes apart on a shared machine differ by more than the speed-ups).

    Repeated (at most 3 times) while a record that was not part of the last comparison is the fastest:
    its older measurement may just have been taken at a quieter moment."""
    from tvm.s_tir import meta_schedule as ms
    store, options, progress = run.store, run.options, run.progress
    if options.verify_top <= 0:
        return
    notes = run.meta["tasks"]
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
        measured = measure(run.machines.builder, run.machines.runner, run.tvm_target, items,
                           rounds=options.verify_rounds)
        for (task, entry), secs in zip(owners, measured):
            old = entry.seconds
            entry.payload[1] = secs if secs is not None else [1e10]
            run.log.info("%s: re-measured %s %.4f ms -> %s", task.name,
                     "hand schedule" if entry.trace_key == notes[task.shash].get("hand") else "candidate",
                     old * 1e3, f"{entry.seconds * 1e3:.4f} ms" if secs else "failed")
        for task, chosen in todo:
            if math.isfinite(chosen[0].seconds):
                notes[task.shash]["hand_ms"] = chosen[0].seconds * 1e3
        write_meta(store.folder, run.meta)
        store.flush(force=True)
        stop_if_asked(run.sigint)
    for task in pending:
        notes[task.shash]["verified"] = len(store.entries_for(task.mod))
    write_meta(store.folder, run.meta)


def _warm_start(cost_model, context, store, task, log) -> None:
    """On a resumed run, train the cost model on the measurements DIR already holds for this task (a fresh
    XGBoost model would otherwise steer the first batch at random)."""
    from tvm.s_tir import meta_schedule as ms
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


def search_tasks(run: TuningRun, tasks: list[TuningTask]) -> list[TaskResult]:
    """Hand-schedule baselines, then the search task by task, then `remeasure_best`; the results per task."""
    from tvm.s_tir import meta_schedule as ms
    spec, tvm_target, trials, only = run.spec, run.tvm_target, run.trials, run.only
    store, machines, options, progress, log, sigint = (run.store, run.machines, run.options, run.progress, run.log,
                                                       run.sigint)
    notes = run.meta.setdefault("tasks", {})
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
        measured = measure(machines.builder, machines.runner, tvm_target,
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
        write_meta(store.folder, run.meta)
        store.flush()
        stop_if_asked(sigint)

    # 2. the search, task by task
    progress_rows = []
    cost_model = ms.cost_model.XGBModel(extractor=ms.feature_extractor.PerStoreFeature(),
                                        adaptive_training=True, num_tuning_cores=usable_cores(),
                                        early_stopping_rounds=options.xgb_early_stopping)
    for index, task in enumerate(tasks, start=1):
        stop_if_asked(sigint)
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
                stop_if_asked(sigint)

            context = ms.TuneContext(
                mod=task.mod, target=tvm_target, space_generator="post-order-apply",
                search_strategy=ms.search_strategy.EvolutionarySearch(
                    population_size=options.population, genetic_num_iters=options.evolve_iters,
                    init_min_unmeasured=min(50, options.population)),
                task_name=task.name, logger=logging.getLogger(f"patvm.tuning.search.task{index}"),
                rand_state=(options.seed * 7919 + index * 104729 + state["done"]) % (2 ** 31 - 1),
                num_threads=run.cores).clone()
            log.info("task %d %s: %d trials in the database, %d to go", index, task.name, state["done"], remaining)
            if entries:
                _warm_start(cost_model, context, store, task, log)
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
    remeasure_best(run, [t for t, _, _ in progress_rows if only is None or only in t.name])
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
