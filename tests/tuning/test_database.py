"""Tuning database files without a search: validation (file:line errors), repair, atomic writes, lock,
export of the best records, and compatibility with TVM's own JSONDatabase.

The records here are the hand schedules of a tiny model's kernels with made-up run times: real traces on
real workloads, no measurement needed."""
import json
import shutil

import pytest
from tuning_helpers import tiny_model

from patvm.errors import PatvmError
from patvm.targets import resolve_target
from patvm.tuning import database as dbmod
from patvm.tuning import export
from patvm.tuning.tasks import extract_tasks, hand_schedule, prepared_module


def make_database(folder, tasks, spec, seconds_per_task):
    """Records with the given run times (one list of seconds per task) committed through TuningStore."""
    from tvm.s_tir import meta_schedule as ms
    with dbmod.locked(folder):
        store = dbmod.TuningStore(folder)
        for task, seconds in zip(tasks, seconds_per_task):
            sch = hand_schedule(task, spec)
            workload = store.database.commit_workload(task.mod)
            for s in seconds:
                store.commit(ms.database.TuningRecord(sch.trace, workload, s, spec.tvm_target(),
                                                      ms.arg_info.ArgInfo.from_prim_func(task.func)))
        store.flush()
    return folder


@pytest.fixture(scope="module")
def kernels():
    model, _ = tiny_model()
    spec = resolve_target("host")
    mod = prepared_module(model, spec, "bit-serial")
    tasks = extract_tasks(mod, spec)
    assert len(tasks) == 2
    return spec, mod, tasks


@pytest.fixture(scope="module")
def valid_db(tmp_path_factory, kernels):
    spec, _, tasks = kernels
    # task 0: three records (one failed), task 1: two
    return make_database(tmp_path_factory.mktemp("db") / "db", tasks, spec,
                         [[[3e-4, 3e-4], [2e-4], [1e10]], [[5e-5], [4e-5]]])


@pytest.fixture
def db_copy(valid_db, tmp_path):
    target = tmp_path / "db"
    shutil.copytree(valid_db, target)
    return target


def record_lines(folder):
    return (folder / dbmod.RECORD_FILE).read_text().splitlines()


def test_store_writes_tvm_format_and_best_records(valid_db, kernels):
    from tvm.s_tir import meta_schedule as ms
    spec, _, tasks = kernels
    loaded = dbmod.load_database(valid_db)
    assert len(loaded.workloads) == 2 and len(loaded.entries) == 5 and not loaded.problems
    best = loaded.best_per_workload()
    assert sorted(round(e.seconds, 6) for e in best.values()) == [4e-5, 2e-4]
    # TVM's own JSONDatabase reads the same folder
    tvm_db = ms.database.JSONDatabase(work_dir=str(valid_db), allow_missing=False)
    assert len(tvm_db.get_all_tuning_records()) == 5
    # open_database keeps the best valid record per workload; lookups by the build's own IRModules hit
    db = dbmod.open_database(valid_db)
    assert len(db.get_all_tuning_records()) == 2
    for task in tasks:
        record = db.query_tuning_record(task.mod, spec.tvm_target(), "main")
        assert record is not None
    assert not list(valid_db.glob(".tmp-*"))


def test_records_apply_to_the_prepared_module(valid_db, kernels):
    """MetaScheduleApplyDatabase marks each function it found a record for (before the hand schedules)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from patvm.compiler.build import apply_tuning_database, is_scheduled
    spec, mod, _ = kernels

    def scheduled(database):
        out = apply_tuning_database(mod, spec, database)
        return {gv.name_hint: is_scheduled(f) for gv, f in out.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}

    assert not any(scheduled(ms.database.MemoryDatabase()).values())       # control: nothing found
    found = scheduled(dbmod.open_database(valid_db))
    assert found and all(found.values()), found


def test_missing_folder_and_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(PatvmError, match="not a folder"):
        dbmod.open_database(tmp_path / "nope")
    with pytest.raises(PatvmError, match="database_workload.json and database_tuning_record.json are missing"):
        dbmod.open_database(tmp_path)


def test_truncated_record_line_names_file_and_line(db_copy):
    path = db_copy / dbmod.RECORD_FILE
    lines = record_lines(db_copy)
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a killed append
    with pytest.raises(PatvmError) as info:
        dbmod.open_database(db_copy)
    message = str(info.value)
    assert f"{path}:{len(lines)}: not valid JSON" in message and "--repair" in message
    assert "\n" not in message


@pytest.mark.parametrize("edit, expect", [
    (lambda item: [item[0], [item[1][0], "fast", *item[1][2:]]], "run_secs must be a list"),
    (lambda item: [item[0], [item[1][0], [-1.0], *item[1][2:]]], "run_secs must be a list"),
    (lambda item: [7, item[1]], "workload index 7 is not a line"),
    (lambda item: [item[0], [[[["GetSBlock", [], ["no_such_block", "main"], ["b0"]]], []], *item[1][1:]]],
     "does not apply to its workload"),
    (lambda item: [item[0], [item[1][0], item[1][1], {"kind": "no-such-kind"}, item[1][3]]],
     "does not apply to its workload"),
    (lambda item: {"oops": 1}, "expected [<workload index>"),
])
def test_hand_edited_record_line(db_copy, edit, expect):
    path = db_copy / dbmod.RECORD_FILE
    lines = record_lines(db_copy)
    best_line = 2          # line 2 holds task 0's best record: open_database decodes it
    lines[best_line - 1] = json.dumps(edit(json.loads(lines[best_line - 1])))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PatvmError) as info:
        dbmod.load_database(db_copy)
    assert str(info.value).startswith(f"{path}:{best_line}: bad record") and expect in str(info.value)


def test_hand_edited_workload_line(db_copy):
    path = db_copy / dbmod.WORKLOAD_FILE
    lines = path.read_text().splitlines()
    item = json.loads(lines[1])
    path.write_text("\n".join([lines[0], json.dumps([str(int(item[0]) ^ 1), item[1]])]) + "\n")
    with pytest.raises(PatvmError, match=rf"{path}:2: bad workload: the structural hash does not match"):
        dbmod.open_database(db_copy)
    path.write_text("\n".join([lines[0], json.dumps([item[0], item[1][:100] + "!!" + item[1][102:]])]) + "\n")
    with pytest.raises(PatvmError, match=rf"{path}:2: bad workload: the IRModule does not decode"):
        dbmod.open_database(db_copy)


def test_repair_quarantines_broken_lines_and_keeps_the_rest(db_copy):
    path = db_copy / dbmod.RECORD_FILE
    lines = record_lines(db_copy)
    lines[0] = lines[0][:40]                                      # truncated
    lines[3] = json.dumps([0, "hand-edited"])                     # wrong shape
    path.write_text("\n".join(lines) + "\n")
    problems = export.repair_database(db_copy)
    assert [p.line for p in problems] == [1, 4]
    loaded = dbmod.load_database(db_copy)                         # strict: valid now
    assert len(loaded.entries) == 3
    (quarantine,) = (db_copy / dbmod.QUARANTINE_DIR).iterdir()
    text = quarantine.read_text()
    assert f"{path}:1: not valid JSON" in text and lines[0] in text and '"hand-edited"' in text
    assert export.repair_database(db_copy) == []                   # idempotent


def test_broken_workload_takes_its_records_to_quarantine(db_copy):
    path = db_copy / dbmod.WORKLOAD_FILE
    lines = path.read_text().splitlines()
    path.write_text(lines[0][:50] + "\n" + lines[1] + "\n")
    problems = export.repair_database(db_copy)
    assert problems[0].file == str(path) and problems[0].line == 1
    assert sum("its workload" in p.reason for p in problems) == 3   # task 0's three records
    loaded = dbmod.load_database(db_copy)
    assert len(loaded.workloads) == 1 and len(loaded.entries) == 2
    assert all(e.workload == 0 for e in loaded.entries)           # indices renumbered


def test_interrupted_writes_leave_the_old_file(db_copy, monkeypatch):
    """Writes go to a temporary file renamed at the end: a failure half-way leaves the previous file."""
    before = (db_copy / dbmod.RECORD_FILE).read_bytes()
    loaded = dbmod.load_database(db_copy)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", explode)
    with pytest.raises(KeyboardInterrupt):
        dbmod.write_database(db_copy, loaded.workloads, loaded.entries[:1])
    monkeypatch.undo()
    assert (db_copy / dbmod.RECORD_FILE).read_bytes() == before
    assert not list(db_copy.glob(".tmp-*"))
    (db_copy / ".tmp-abc.json").write_text("[0, [")               # what a SIGKILL can leave
    with dbmod.locked(db_copy):
        dbmod.TuningStore(db_copy)
    assert not list(db_copy.glob(".tmp-*"))


def test_one_tuning_run_per_folder(db_copy):
    with dbmod.locked(db_copy):
        with pytest.raises(PatvmError, match="in use by another patvm tune"):
            with dbmod.locked(db_copy):
                pass
    with dbmod.locked(db_copy):                                   # released afterwards
        pass


def test_target_check(valid_db):
    dbmod.open_database(valid_db, target="host")
    with pytest.raises(PatvmError, match="was tuned for"):
        dbmod.open_database(valid_db, target="arm-a72")


def test_export_best_keeps_one_record_per_workload_and_merges(valid_db, kernels, tmp_path):
    spec, _, tasks = kernels
    out = tmp_path / "schedules" / "x86-test"
    assert export.export_best(valid_db, out) == {"workloads": 2, "updated": 2, "dropped": 0}
    exported = dbmod.load_database(out)
    assert sorted(round(e.seconds, 6) for e in exported.entries) == [4e-5, 2e-4]
    assert export.export_best(valid_db, out)["updated"] == 0       # nothing faster: unchanged
    faster = make_database(tmp_path / "faster", tasks[1:], spec, [[[1e-5]]])
    assert export.export_best(faster, out) == {"workloads": 2, "updated": 1, "dropped": 0}
    assert sorted(round(e.seconds, 6) for e in dbmod.load_database(out).entries) == [1e-5, 2e-4]
    meta = json.loads((out / dbmod.META_FILE).read_text())
    assert meta["format"] == dbmod.META_FORMAT and "tvm" in meta


def test_export_best_keeps_only_the_workloads_asked_for(valid_db, kernels, tmp_path):
    """--keep-only: records of kernels no listed model compiles to any more leave the folder."""
    _, _, tasks = kernels
    out = tmp_path / "schedules" / "x86-test"
    export.export_best(valid_db, out)
    assert export.export_best(valid_db, out, keep={tasks[1].shash}) == {"workloads": 1, "updated": 0, "dropped": 1}
    (left,) = dbmod.load_database(out).workloads
    assert left[0] == tasks[1].shash


def test_export_best_takes_the_measured_strategies_along(db_copy, kernels, tmp_path):
    """The measured per-layer choices decide which kernels a build has, so they travel with the records
    (merged: a newer measurement of a workload replaces the older one, other workloads are kept)."""
    from patvm.records import STRATEGY_FILE, read_strategies
    spec, _, tasks = kernels
    out = tmp_path / "schedules" / "x86-test"
    (db_copy / STRATEGY_FILE).write_text(json.dumps({"conv:a": {"strategy": "fp32"}, "conv:b": {"strategy": "fp32"}}))
    export.export_best(db_copy, out)
    assert read_strategies(out) == read_strategies(db_copy)
    newer = make_database(tmp_path / "newer", tasks[1:], spec, [[[1e-5]]])
    (newer / STRATEGY_FILE).write_text(json.dumps({"conv:b": {"strategy": "bit-serial"}}))
    export.export_best(newer, out)
    assert read_strategies(out) == {"conv:a": {"strategy": "fp32"}, "conv:b": {"strategy": "bit-serial"}}


def test_export_refuses_an_empty_or_failed_database(kernels, tmp_path):
    spec, _, tasks = kernels
    failed = make_database(tmp_path / "failed", tasks[:1], spec, [[[1e10]]])
    with pytest.raises(PatvmError, match="no successful measurement"):
        export.export_best(failed, tmp_path / "out")


SHIPPED = sorted(
    p.parent for p in (dbmod.Path(__file__).resolve().parents[2] / "schedules").glob(f"*/{dbmod.RECORD_FILE}")
)


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_databases_are_valid(folder):
    """Every database under schedules/ opens (every line valid) and holds one record per workload."""
    loaded = dbmod.load_database(folder)
    assert len(loaded.entries) == len(loaded.workloads) == len(loaded.best_per_workload())
    meta = dbmod.read_meta(folder)
    assert meta.get("target"), f"{folder}/{dbmod.META_FILE} names no target"


def test_a_committed_record_is_written_into_an_existing_database(db_copy, kernels):
    """The hand-schedule baselines are committed, not searched: with `--trials 0` nothing else follows, and
    the flush used to see no new record and write nothing (the baselines were lost)."""
    spec, _, tasks = kernels
    before = len(record_lines(db_copy))
    make_database(db_copy, tasks[:1], spec, [[[1e-4]]])
    assert len(record_lines(db_copy)) == before + 1
