"""A real `patvm tune` of a tiny model: killed with SIGKILL after its first checkpoint, resumed with the
same command, re-run with nothing left to do; then the records are applied at build time.

One tuning run (2 kernels x 2 trials, batches of 1) serves every test here: ~2-3 minutes on 2 busy cores.
"""
import json
import os
import re
import signal
import time
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
from tuning_helpers import (
    QUICK,
    alive,
    compiler_builders,
    patvm_cli,
    patvm_popen,
    process_tree,
    save_tiny_model,
    stop_tree,
)

from patvm import records
from patvm.tuning import database as dbmod
from patvm.tuning import export

TRIALS = 2


def searched_per_workload(db):
    loaded = dbmod.load_database(db)
    meta = dbmod.read_meta(db)
    hand = {loaded.workloads[i][0]: meta["tasks"].get(loaded.workloads[i][0], {}).get("hand")
            for i in range(len(loaded.workloads))}
    counts = {}
    for e in loaded.entries:
        shash = loaded.workloads[e.workload][0]
        counts.setdefault(shash, {"hand": 0, "searched": 0})
        counts[shash]["hand" if e.trace_key == hand[shash] else "searched"] += 1
    return counts


def run_until(args, log, records, lines, sig, timeout=400):
    """Start `patvm tune`, send `sig` once the record file has `lines` lines; (exit code, pids left alive)."""
    start = time.monotonic()
    proc = patvm_popen(*args, log=log)
    seen = {}
    try:
        while not (records.is_file() and len(records.read_text().splitlines()) >= lines):
            for p in process_tree(proc.pid):
                seen[p.pid] = p
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() - start < timeout, f"no checkpoint after {timeout} s"
            time.sleep(0.2)
        for p in process_tree(proc.pid):
            seen[p.pid] = p
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=120)
        psutil.wait_procs(list(seen.values()), timeout=30)
        return code, alive(seen.values())
    finally:
        stop_tree(proc)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    model_path, model, x = save_tiny_model(folder)
    db = folder / "db"
    args = ["tune", model_path, "--db", db, "--trials", TRIALS, "--per-iter", 1, "--strategy", "bit-serial", *QUICK]
    records = db / dbmod.RECORD_FILE
    timings = {}

    # run 1: Ctrl-C once the 2 hand-schedule records and one searched record are on disk
    start = time.monotonic()
    sigint_code, sigint_alive = run_until(args, folder / "run1.log", records, 3, signal.SIGINT)
    timings["sigint_after"] = time.monotonic() - start
    after_sigint = dbmod.load_database(db)          # strict: raises on any broken line
    # run 2: the same command resumes; SIGKILL once it wrote one more record
    start = time.monotonic()
    sigkill_code, sigkill_alive = run_until(args, folder / "run2.log", records, len(after_sigint.entries) + 1,
                                            signal.SIGKILL)
    timings["sigkill_after"] = time.monotonic() - start
    after_kill = dbmod.load_database(db)

    # run 3: the same command finishes; run 4: nothing left to do
    start = time.monotonic()
    resumed = patvm_cli(*args)
    timings["resume"] = time.monotonic() - start
    start = time.monotonic()
    again = patvm_cli(*args)
    timings["rerun"] = time.monotonic() - start
    print(f"\ntuning timings (s): {timings}")
    return SimpleNamespace(folder=folder, db=db, model=model, x=x, model_path=model_path,
                           after_sigint=after_sigint, after_kill=after_kill, sigint_code=sigint_code,
                           sigkill_code=sigkill_code, left_running=sigint_alive + sigkill_alive,
                           sigint_log=(folder / "run1.log").read_text(), resumed=resumed, again=again,
                           timings=timings)


def test_ctrl_c_saves_and_says_how_to_resume(tuned):
    assert tuned.sigint_code == 130, tuned.sigint_log
    assert "records are safe in" in tuned.sigint_log
    assert "run the same command to resume" in tuned.sigint_log and "Traceback" not in tuned.sigint_log
    assert len(tuned.after_sigint.entries) >= 3 and not tuned.after_sigint.problems


def test_sigkill_leaves_a_valid_database_and_no_workers(tuned):
    assert tuned.sigkill_code == -signal.SIGKILL
    assert len(tuned.after_kill.entries) > len(tuned.after_sigint.entries) and not tuned.after_kill.problems
    assert tuned.left_running == []               # builder / runner workers died with their parent
    # a killed run can leave an unrenamed temporary file; it is never read, and the next run removes it
    assert not list(tuned.db.glob(".tmp-*"))


def test_resume_runs_only_the_missing_trials(tuned):
    assert tuned.resumed.returncode == 0, tuned.resumed.stderr
    counts = searched_per_workload(tuned.db)
    assert len(counts) == 2
    for c in counts.values():
        assert c["hand"] == 1, counts
        assert c["searched"] == TRIALS, counts    # not more: the killed run's records counted
    searched_before = len(tuned.after_kill.entries) - 2           # the 2 hand records came first
    new = sum(c["searched"] for c in counts.values()) - searched_before
    assert f"{new} new trials" in tuned.resumed.stdout


def test_progress_and_table(tuned):
    out, err = tuned.resumed.stdout, tuned.resumed.stderr
    # progress on stderr: task, trials done / total, best so far, elapsed
    assert "pa_pack_activation_planes" in err and f"/{TRIALS} trials" in err and "best " in err
    assert "measuring the hand schedules" in tuned.sigint_log          # once, in the first run only
    assert "measuring the hand schedules" not in err
    assert "\r" not in err                         # a pipe: lines, not redraws
    assert any(re.search(r"trials \[\d\d:\d\d, best ", line) for line in err.splitlines())
    # MetaSchedule's own log went to the file, not to the terminal
    assert "evolutionary_search" not in err + out and "task_scheduler" not in err + out
    assert "evolutionary_search" in (tuned.db / "logs" / "tune.log").read_text()
    # the table: per task untuned (hand) vs tuned and the speed-up
    assert "untuned (hand)" in out and "tuned" in out and "speed-up" in out
    for name in ("fused_pa_bitserial_conv2d_add", "pa_pack_activation_planes"):
        row = next(line for line in out.splitlines() if line.startswith(name))
        assert row.count(" ms") == 2 and "x " in row, row


def test_rerun_with_nothing_left_measures_nothing(tuned):
    assert tuned.again.returncode == 0, tuned.again.stderr
    assert "0 new trials" in tuned.again.stdout
    assert "measuring the hand schedules" not in tuned.again.stderr
    assert tuned.timings["rerun"] < tuned.timings["resume"]


def test_records_are_applied_at_build_time(tuned):
    """Every kernel of the module `patvm compile` builds finds its record (MetaScheduleApplyDatabase marks
    it scheduled before the hand schedules run), in this process, from the files another process wrote."""
    from patvm.compiler.build import apply_tuning_database, kernel_names
    from patvm.targets import resolve_target
    from patvm.tuning.tasks import prepared_module
    spec = resolve_target("host")
    mod = prepared_module(tuned.model, spec, "bit-serial")
    database = dbmod.open_database(tuned.db, target=spec)
    out = apply_tuning_database(mod, spec, database)
    assert len(kernel_names(out)) == 2
    missing = kernel_names(out, scheduled=False)
    assert missing == [], f"no tuning record found for {missing}"


def test_tuned_build_is_correct_and_timed(tuned, record_property):
    import patvm
    untuned = patvm.compile(tuned.model, target="host", strategy="bit-serial")
    with_db = patvm.compile(tuned.model, target="host", strategy="bit-serial", tuning_db=tuned.db)
    np.testing.assert_array_equal(with_db.run(tuned.x)[0], untuned.run(tuned.x)[0])
    t_untuned = float(np.median(untuned.time(tuned.x, repeat=10)))
    t_tuned = float(np.median(with_db.time(tuned.x, repeat=10)))
    record_property("untuned_ms", t_untuned)
    record_property("tuned_ms", t_tuned)
    print(f"\ntiny model, whole module: untuned {t_untuned:.4f} ms, tuned {t_tuned:.4f} ms "
          f"({t_untuned / t_tuned:.2f}x)")


def cli(capsys, *args):
    """`patvm ...` in this process (the subprocess start-up is 5-10 s here); (exit code, stdout, stderr)."""
    from patvm.cli import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_compile_refuses_a_broken_database_in_one_line(tuned, tmp_path, capsys):
    import shutil
    broken = tmp_path / "db"
    shutil.copytree(tuned.db, broken)
    path = broken / dbmod.RECORD_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [lines[-1][:-7]]) + "\n")
    code, _, err = cli(capsys, "compile", tuned.model_path, "--tuning-db", broken, "-o", tmp_path / "m.so",
                       "--strategy", "bit-serial")
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith("patvm: error:") and f"{path}:{len(lines)}:" in line


def test_export_best_from_the_cli(tuned, tmp_path, capsys):
    out = tmp_path / "schedules" / "host"
    code, stdout, err = cli(capsys, "tune", "--db", tuned.db, "--export-best", out)
    assert code == 0, err
    assert "best records of 2 kernel(s)" in stdout
    exported = dbmod.load_database(out)
    assert len(exported.entries) == len(exported.workloads) == 2
    meta = json.loads((out / dbmod.META_FILE).read_text())
    names = sorted(t["name"] for t in meta["tasks"].values())
    assert names[0].startswith("fused_pa_bitserial_conv2d_add") and names[1] == "pa_pack_activation_planes"


def test_export_keeps_only_the_kernels_of_the_models_named(tuned, tmp_path, capsys):
    from patvm.onnx_format import save_model
    out = tmp_path / "schedules" / "host"
    code, stdout, err = cli(capsys, "tune", "--db", tuned.db, "--export-best", out, "--strategy", "bit-serial",
                            "--keep-only", tuned.model_path)
    assert code == 0 and "best records of 2 kernel(s)" in stdout and "0 no longer used dropped" in stdout, err
    # a model with other shapes compiles to other kernels: the tiny model's records leave the folder
    wider = tmp_path / "wider.onnx"
    save_model(compiler_builders().binary_layer_model(kind="conv", C=16, O=16, H=10, batch=1)[0], wider)
    code, stdout, err = cli(capsys, "tune", "--db", tuned.db, "--export-best", out, "--strategy", "bit-serial",
                            "--keep-only", wider)
    assert code == 0 and "best records of 0 kernel(s)" in stdout and "2 no longer used dropped" in stdout, err
    assert dbmod.load_database(out, must_exist=False).workloads == []
    code, _, err = cli(capsys, "tune", "--db", tuned.db, "--keep-only", wider)
    assert code == 2 and "--keep-only goes with --export-best" in err


def test_another_target_needs_another_folder(tuned, capsys):
    code, _, err = cli(capsys, "tune", tuned.model_path, "--db", tuned.db, "--target", "x86-avx2", "--trials", 1)
    assert code == 2 and "use another --db folder per target" in err


def test_shipped_schedules_apply_when_the_target_matches(tuned, tmp_path, monkeypatch, capsys):
    """A database under schedules/ made for this target is used without --tuning-db (every kernel finds
    its record, the report says so); another target, or --no-tuning-db, builds with hand schedules."""
    import patvm
    schedules = tmp_path / "schedules"
    export.export_best(tuned.db, schedules / "this-cpu")
    monkeypatch.setattr(records, "SCHEDULES_DIR", schedules)   # where shipped_schedules looks

    shipped = patvm.compile(tuned.model, target="host", strategy="bit-serial")
    assert shipped.schedules["database"] == str(schedules / "this-cpu") and shipped.schedules["shipped"]
    assert shipped.schedules["kernels"] == 2 and len(shipped.schedules["tuned"]) == 2
    assert f"2 of 2 kernels from the tuning database {schedules / 'this-cpu'} (shipped" in shipped.report()

    hand = patvm.compile(tuned.model, target="host", strategy="bit-serial", tuning_db=False)
    assert hand.schedules == {"database": None, "shipped": False, "kernels": 2, "tuned": []}
    np.testing.assert_array_equal(shipped.run(tuned.x)[0], hand.run(tuned.x)[0])
    other_cpu = patvm.compile(tuned.model, target={"kind": "llvm", "mcpu": "haswell"}, strategy="bit-serial")
    assert other_cpu.schedules["database"] is None

    out = tmp_path / "m.so"
    code, stdout, err = cli(capsys, "compile", tuned.model_path, "--strategy", "bit-serial", "--report", "-o", out)
    assert code == 0 and "2 of 2 kernels" in stdout, err
    assert patvm.load(out).schedules["tuned"] == shipped.schedules["tuned"]
    code, stdout, err = cli(capsys, "compile", tuned.model_path, "--strategy", "bit-serial", "--report",
                            "--no-tuning-db", "-o", out)
    assert code == 0 and "all hand-scheduled" in stdout, err
