"""Tuning databases on disk, read and checked: what a build applies (`patvm compile --tuning-db DIR`, or
the database shipped in schedules/ for the target) and what `patvm tune` extends (patvm.tuning.database).

A database is a folder with MetaSchedule's two files, so plain TVM reads it too
(`ms.database.JSONDatabase(work_dir=DIR)`):

    database_workload.json        one workload per line: ["<structural hash>", "<base64 IRModule>"]
    database_tuning_record.json   one record per line:   [<workload line index>, [trace, run_secs, target, args_info]]
    patvm-tuning.json             patvm's notes: the target, task names, which record is the hand schedule
    strategies.json               measured per-layer strategies (`patvm tune --measure-strategies`)
    logs/                         MetaSchedule's own log (`patvm tune`)

Reading (`open_database`, `load_database`): every line is checked here before TVM sees it -- valid JSON,
the expected shape, a known workload index, a structural hash that matches its IRModule, a trace that
replays on its workload. A broken line is refused: `PatvmError("DIR/database_tuning_record.json:17:
not valid JSON (a truncated or hand-edited line?); `patvm tune --repair --db DIR` moves broken lines to
DIR/quarantine/ and keeps the rest")`. Refusing (rather than skipping silently) is deliberate: a skipped
record silently changes which schedule a build uses. `patvm.tuning.export.repair_database` is the explicit
way out; it never deletes a line, it moves it to `quarantine/<time>.txt` with the reason.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from patvm.data import data_dir
from patvm.errors import PatvmError, first_line
from patvm.targets import target_key

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
META_FILE = "patvm-tuning.json"
SCHEDULES_DIR = data_dir("schedules")   # the databases shipped with patvm
QUARANTINE_DIR = "quarantine"
META_FORMAT = "patvm-tuning-1"
FAILED_SECS = 1e9          # MetaSchedule records a failed build/run with run_secs [1e10]


class DatabaseError(PatvmError):
    """A database file patvm refuses; the message names the file and line."""


# ---------------------------------------------------------------- records in memory


@dataclass
class Entry:
    """One valid record line: the workload index (into `LoadedDatabase.workloads`) and its JSON payload."""
    workload: int
    payload: list                   # [trace, run_secs, target, args_info], as in the file
    line: int = 0                   # line number in the file it came from (0: new)

    @property
    def seconds(self) -> float:
        """Mean run time; inf for a failed trial."""
        return record_seconds(self.payload[1])

    @property
    def trace_key(self) -> str:
        return trace_digest(self.payload[0])


@dataclass
class Problem:
    file: str
    line: int
    reason: str
    text: str

    def message(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class LoadedDatabase:
    folder: Path
    workloads: list = field(default_factory=list)       # [shash, base64] per workload line kept
    modules: list = field(default_factory=list)         # tvm IRModule per workload (decoded)
    entries: list = field(default_factory=list)         # Entry per record line kept
    problems: list = field(default_factory=list)        # Problem per line refused

    def best_per_workload(self) -> dict[int, Entry]:
        best: dict[int, Entry] = {}
        for entry in self.entries:
            if math.isfinite(entry.seconds) and (entry.workload not in best
                                                  or entry.seconds < best[entry.workload].seconds):
                best[entry.workload] = entry
        return best

    def entries_for(self, index: int) -> list[Entry]:
        return [e for e in self.entries if e.workload == index]


def record_seconds(run_secs) -> float:
    if not run_secs:
        return math.inf
    values = [float(s) for s in run_secs]
    mean = sum(values) / len(values)
    return mean if mean < FAILED_SECS else math.inf


def trace_digest(trace_json) -> str:
    return hashlib.sha256(json.dumps(trace_json, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def database_paths(folder) -> tuple[Path, Path]:
    folder = Path(folder)
    return folder / WORKLOAD_FILE, folder / RECORD_FILE


def database_folder(path) -> Path:
    """A database folder, or one of its two files."""
    path = Path(os.fspath(path))
    if path.name in (WORKLOAD_FILE, RECORD_FILE) and path.is_file():
        return path.parent
    return path


# ---------------------------------------------------------------- validation


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatabaseError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DatabaseError(f"{path}:{line}: not UTF-8 text (a binary or damaged file?)") from exc
    return [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]


def _decode_workload(item):
    """[shash, b64] -> IRModule, or raise ValueError with the reason."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms
    if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
            and item[0].isdigit()):
        raise ValueError('expected ["<structural hash>", "<base64 IRModule>"]')
    try:
        workload = ms.database.Workload.from_json(item)
    except Exception as exc:  # TVM raises several types for a damaged payload
        raise ValueError(f"the IRModule does not decode ({first_line(exc, 160, skip_traceback=True)})") from exc
    if str(tvm_ffi.structural_hash(workload.mod)) != item[0]:
        raise ValueError("the structural hash does not match its IRModule (an edited line?)")
    return workload


def _check_payload(payload) -> None:
    if not (isinstance(payload, list) and len(payload) == 4):
        raise ValueError("expected [trace, run_secs, target, args_info]")
    trace, run_secs, target, args_info = payload
    if not (isinstance(trace, list) and len(trace) == 2 and all(isinstance(t, list) for t in trace)):
        raise ValueError("the trace must be [instructions, decisions]")
    if run_secs is not None:
        if not (isinstance(run_secs, list) and run_secs and all(
                isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
                for s in run_secs)):
            raise ValueError("run_secs must be a list of positive seconds")
    if not (isinstance(target, dict) and isinstance(target.get("kind"), str)):
        raise ValueError("target must be a JSON object with a 'kind'")
    if not isinstance(args_info, list):
        raise ValueError("args_info must be a list")


def _decode_record(payload, workload):
    from tvm.s_tir import meta_schedule as ms
    try:
        return ms.database.TuningRecord.from_json(payload, workload)
    except Exception as exc:  # a trace that does not replay raises ScheduleError etc.
        reason = first_line(exc, 160, skip_traceback=True)
        raise ValueError(f"the record does not apply to its workload ({reason})") from exc


def load_database(folder, *, strict: bool = True, decode: str = "all", must_exist: bool = True) -> LoadedDatabase:
    """Read and validate a database folder.

    strict: raise DatabaseError at the first broken line (else collect it in `.problems` and skip it).
    decode: "all" replays every record's trace on its workload (what tuning needs), "best" only the best
    record per workload (what a build uses; the other lines are still checked as JSON and for shape).
    """
    folder = database_folder(folder)
    wl_path, rec_path = database_paths(folder)
    loaded = LoadedDatabase(folder)
    if not folder.is_dir():
        if must_exist:
            raise DatabaseError(f"no tuning database at {folder}: not a folder")
        return loaded
    if not wl_path.is_file() and not rec_path.is_file():
        if must_exist:
            raise DatabaseError(f"no tuning database in {folder}: {WORKLOAD_FILE} and {RECORD_FILE} are missing "
                                "(make one with `patvm tune MODEL --db DIR`)")
        return loaded
    if not wl_path.is_file():
        raise DatabaseError(f"{wl_path} is missing but {RECORD_FILE} exists: the records cannot be read")

    def refuse(path: Path, line: int, reason: str, text: str) -> None:
        problem = Problem(str(path), line, reason, text)
        if strict:
            raise DatabaseError(f"{problem.message()}; `patvm tune --repair --db {folder}` moves broken "
                                f"lines to {folder / QUARANTINE_DIR}/ and keeps the rest")
        loaded.problems.append(problem)

    # workloads: file index -> kept index (None: broken)
    remap: dict[int, int | None] = {}
    for file_index, (number, text) in enumerate(_lines(wl_path)):
        try:
            item = json.loads(text)
        except ValueError:
            refuse(wl_path, number, "not valid JSON (a truncated or hand-edited line?)", text)
            remap[file_index] = None
            continue
        try:
            workload = _decode_workload(item)
        except ValueError as exc:
            refuse(wl_path, number, f"bad workload: {exc}", text)
            remap[file_index] = None
            continue
        remap[file_index] = len(loaded.workloads)
        loaded.workloads.append(item)
        loaded.modules.append(workload)

    pending: list[tuple[int, str, Entry]] = []
    if rec_path.is_file():
        for number, text in _lines(rec_path):
            try:
                item = json.loads(text)
            except ValueError:
                refuse(rec_path, number, "not valid JSON (a truncated or hand-edited line?)", text)
                continue
            try:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                        and not isinstance(item[0], bool)):
                    raise ValueError("expected [<workload index>, [trace, run_secs, target, args_info]]")
                if item[0] not in remap:
                    raise ValueError(f"workload index {item[0]} is not a line of {WORKLOAD_FILE} "
                                     f"(it has {len(remap)})")
                if remap[item[0]] is None:
                    raise ValueError(f"its workload ({WORKLOAD_FILE} line {item[0] + 1}) is broken")
                _check_payload(item[1])
            except ValueError as exc:
                refuse(rec_path, number, f"bad record: {exc}", text)
                continue
            pending.append((number, text, Entry(remap[item[0]], item[1], number)))

    wanted = None
    if decode == "best":
        best: dict[int, Entry] = {}
        for _, _, entry in pending:
            if math.isfinite(entry.seconds) and (
                entry.workload not in best or entry.seconds < best[entry.workload].seconds
            ):
                best[entry.workload] = entry
        wanted = {id(e) for e in best.values()}
    for number, text, entry in pending:
        if wanted is not None and id(entry) not in wanted:
            continue
        try:
            _decode_record(entry.payload, loaded.modules[entry.workload])
        except ValueError as exc:
            refuse(rec_path, number, f"bad record: {exc}", text)
            continue
        loaded.entries.append(entry)
    return loaded


def memory_database(loaded: LoadedDatabase, entries=None):
    """A MetaSchedule MemoryDatabase with the loaded workloads and `entries` (default: all records)."""
    from tvm.s_tir import meta_schedule as ms
    db = ms.database.MemoryDatabase()
    workloads = [db.commit_workload(w.mod) for w in loaded.modules]
    for entry in loaded.entries if entries is None else entries:
        db.commit_tuning_record(ms.database.TuningRecord.from_json(entry.payload, workloads[entry.workload]))
    return db


def open_database(path, target=None):
    """The MetaSchedule database a build applies (`patvm compile --tuning-db DIR`).

    Holds the best valid record per workload of DIR (every line is validated first; a broken line is a
    one-line DatabaseError naming the file and line). With `target` (a TargetSpec, name or dict),
    records made for another CPU or triple are refused."""
    loaded = load_database(path, strict=True, decode="best")
    if target is not None:
        check_target(loaded, target)
    return memory_database(loaded, list(loaded.best_per_workload().values()))


def shipped_schedules(target) -> Path | None:
    """The database under schedules/ that was tuned for this target's code generation (kind, CPU,
    triple, features; see `target_key`), or None. Used by `patvm compile` when no --tuning-db is given."""
    want = target_key(target)
    for record_file in sorted(SCHEDULES_DIR.glob(f"*/{RECORD_FILE}")):
        made_for = read_meta(record_file.parent).get("target")
        if made_for and target_key(made_for) == want:
            return record_file.parent
    return None


@functools.lru_cache(maxsize=4)
def _open_unchanged(folder: str, stamp: tuple, target_json: str):
    return open_database(folder, target=json.loads(target_json))


def open_database_once(folder, target):
    """open_database(folder, target=...), validated once per process while the folder's files are unchanged
    (a rewrite by `patvm tune` or `--repair` changes their size or time, so they are read again)."""
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None for p in database_paths(folder))
    return _open_unchanged(os.fspath(folder), stamp, json.dumps(target_key(target), sort_keys=True))


# ---------------------------------------------------------------- targets


def check_target(loaded: LoadedDatabase, target) -> None:
    want = target_key(target)
    for entry in loaded.entries:
        have = target_key(entry.payload[2])
        if have != want:
            raise DatabaseError(f"{loaded.folder / RECORD_FILE}:{entry.line}: the record was tuned for {have}, "
                                f"not for {want}; use a database made for this target")


# ---------------------------------------------------------------- patvm's notes beside the database


def read_meta(folder) -> dict:
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {"format": META_FORMAT, "target": None, "tasks": {}}
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != META_FORMAT or not isinstance(meta.get("tasks"), dict):
            raise ValueError(f"format is not {META_FORMAT}")
    except (ValueError, OSError, AttributeError) as exc:
        raise DatabaseError(f"{path}: not a patvm tuning note ({exc}); delete it to start the notes afresh") from exc
    return meta


# ---------------------------------------------------------------- measured strategies beside the database
STRATEGY_FILE = "strategies.json"
# {workload key: {"strategy": "bit-serial" | "fp32", ...}} (patvm.compiler.workload.WorkloadKey)
STRATEGIES_SCHEMA = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "required": ["strategy"],
        "properties": {"strategy": {"enum": ["bit-serial", "fp32"]}},
    },
}


def read_strategies(folder) -> dict | None:
    """The measured per-layer choices `patvm tune --measure-strategies` wrote to FOLDER/strategies.json; None
    when there is no folder or no such file. The one place that decides where they come from: `patvm compile
    --tuning-db DIR`, the shipped database, `patvm tune --db DIR` and export all read them here."""
    if folder is None:
        return None
    path = os.path.join(os.fspath(folder), STRATEGY_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.loads(f.read())
    except ValueError as exc:
        raise PatvmError(f"{path}: not valid JSON ({exc})") from exc
    import jsonschema
    if not jsonschema.Draft202012Validator(STRATEGIES_SCHEMA).is_valid(data):
        raise PatvmError(f"{path}: expected {{workload: {{'strategy': 'bit-serial'|'fp32', ...}}}}")
    return data
