"""Tuning databases on disk: MetaSchedule's JSON format, validated, written atomically.

A database is a folder with MetaSchedule's two files, so plain TVM reads it too
(`ms.database.JSONDatabase(work_dir=DIR)`):

    database_workload.json        one workload per line: ["<structural hash>", "<base64 IRModule>"]
    database_tuning_record.json   one record per line:   [<workload line index>, [trace, run_secs, target, args_info]]
    patvm-tuning.json             patvm's notes: the target, task names, which record is the hand schedule
    logs/                         MetaSchedule's own log (`patvm tune`)

Reading (`open_database`, `load_database`): every line is checked here before TVM sees it -- valid JSON,
the expected shape, a known workload index, a structural hash that matches its IRModule, a trace that
replays on its workload. A broken line is refused: `PatvmError("DIR/database_tuning_record.json:17:
not valid JSON (a truncated or hand-edited line?); `patvm tune --repair --db DIR` moves broken lines to
DIR/quarantine/ and keeps the rest")`. Refusing (rather than skipping silently) is deliberate: a skipped
record silently changes which schedule a build uses. `repair_database` is the explicit way out; it never
deletes a line, it moves it to `quarantine/<time>.txt` with the reason.

Writing (`TuningStore`): MetaSchedule's own JSONDatabase appends to both files as it goes, so a killed
run can leave half a line. patvm tunes into an in-memory database instead and, after every measured batch,
rewrites both files through a temporary file + rename (`patvm.files.atomic_path`): the workload file first,
then the record file (records only refer to workloads already written). A run killed at any instant leaves
the files of the last completed batch; the next `patvm tune` with the same arguments counts the records
per task and only runs the remaining trials. A lock (`flock` on DIR/.lock, released by the kernel when the
process dies) keeps two tuning runs out of one folder.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from patvm.data import data_dir
from patvm.errors import PatvmError
from patvm.files import atomic_write_bytes

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
META_FILE = "patvm-tuning.json"
SCHEDULES_DIR = data_dir("schedules")   # the databases shipped with patvm
LOCK_FILE = ".lock"
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


def _folder_of(path) -> Path:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("File ", "Traceback")):
            return line[:160]
    return type(exc).__name__


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
        raise ValueError(f"the IRModule does not decode ({_first_line(exc)})") from exc
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
        raise ValueError(f"the record does not apply to its workload ({_first_line(exc)})") from exc


def load_database(folder, *, strict: bool = True, decode: str = "all", must_exist: bool = True) -> LoadedDatabase:
    """Read and validate a database folder.

    strict: raise DatabaseError at the first broken line (else collect it in `.problems` and skip it).
    decode: "all" replays every record's trace on its workload (what tuning needs), "best" only the best
    record per workload (what a build uses; the other lines are still checked as JSON and for shape).
    """
    folder = _folder_of(folder)
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


def _memory_database(loaded: LoadedDatabase, entries=None):
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
    return _memory_database(loaded, list(loaded.best_per_workload().values()))


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


def target_key(target) -> dict:
    """The parts of a target that decide code generation (not num-cores / tags)."""
    if not isinstance(target, dict):
        from patvm.targets import resolve_target
        target = resolve_target(target).target
    keep = {}
    for name in ("kind", "mcpu", "mtriple", "mattr", "arch"):
        if target.get(name) not in (None, "", []):
            value = target[name]
            keep[name] = sorted(value) if isinstance(value, list) else value
    return keep


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


def write_meta(folder, meta: dict) -> None:
    atomic_write_bytes(Path(folder) / META_FILE, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------- writing


def _encode_lines(items) -> bytes:
    return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()


def write_database(folder, workloads: list, entries: list) -> None:
    """Rewrite both files atomically, workloads first (records refer to them by line index)."""
    wl_path, rec_path = database_paths(folder)
    atomic_write_bytes(wl_path, _encode_lines(workloads))
    atomic_write_bytes(rec_path, _encode_lines([[e.workload, e.payload] for e in entries]))


@contextlib.contextmanager
def locked(folder):
    """An exclusive lock on a database folder for the whole block (PatvmError if another run holds it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise DatabaseError(f"{folder} is in use by another patvm tune (pid {other or '?'}); "
                                "wait for it or use another --db folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)   # releases the lock


def remove_leftovers(folder: Path) -> list[str]:
    """Temporary files of an atomic write that a killed process never renamed (call under `locked`)."""
    removed = []
    for path in Path(folder).glob(".tmp-*"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.name)
    return removed


class TuningStore:
    """The database of one tuning run: a MetaSchedule MemoryDatabase seeded from DIR, flushed to DIR
    atomically after every measured batch (`flush`). Use inside `locked(folder)`."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.folder)
        loaded = load_database(self.folder, strict=True, decode="all", must_exist=False)
        self.workloads = list(loaded.workloads)
        self.entries = list(loaded.entries)
        self._modules = [w.mod for w in loaded.modules]
        self.database = _memory_database(loaded)
        self._seen = len(self.database.get_all_tuning_records())
        self._unwritten = False   # records added by `commit` (absorbed at once, so `flush` sees nothing new)
        self._by_hash: dict[str, list[int]] = {}
        for index, item in enumerate(self.workloads):
            self._by_hash.setdefault(item[0], []).append(index)

    # workloads
    def workload_index(self, mod, add: bool = True) -> int | None:
        import tvm_ffi
        from tvm.s_tir import meta_schedule as ms
        shash = str(tvm_ffi.structural_hash(mod))
        for index in self._by_hash.get(shash, []):
            if tvm_ffi.structural_equal(self._modules[index], mod):
                return index
        if not add:
            return None
        self.workloads.append(ms.database.Workload(mod).as_json())
        self._modules.append(mod)
        self._by_hash.setdefault(shash, []).append(len(self.workloads) - 1)
        return len(self.workloads) - 1

    def entries_for(self, mod) -> list[Entry]:
        index = self.workload_index(mod, add=False)
        return [] if index is None else [e for e in self.entries if e.workload == index]

    def commit(self, record) -> Entry:
        """Add a record (e.g. the hand schedule's) to the in-memory database; written at the next flush."""
        self.database.commit_tuning_record(record)
        self._unwritten = True
        return self._absorb()[-1]

    def _absorb(self) -> list[Entry]:
        records = self.database.get_all_tuning_records()
        new = []
        for record in records[self._seen:]:
            entry = Entry(self.workload_index(record.workload.mod), record.as_json())
            self.entries.append(entry)
            new.append(entry)
        self._seen = len(records)
        return new

    def flush(self, force: bool = False) -> list[Entry]:
        """Write what MetaSchedule committed since the last flush (everything with `force`, e.g. after
        entries were re-measured); returns the new entries."""
        new = self._absorb()
        if new or force or self._unwritten or not database_paths(self.folder)[1].exists():
            write_database(self.folder, self.workloads, self.entries)
            self._unwritten = False
        return new


# ---------------------------------------------------------------- repair and export


def repair_database(folder) -> list[Problem]:
    """Move every broken line of DIR's database to DIR/quarantine/<time>.txt and rewrite the rest."""
    folder = _folder_of(folder)
    with locked(folder):
        remove_leftovers(folder)
        loaded = load_database(folder, strict=False, decode="all")
        if not loaded.problems:
            return []
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        quarantine = folder / QUARANTINE_DIR / f"{stamp}-{os.getpid()}.txt"
        text = "".join(f"# {p.message()}\n{p.text}\n" for p in loaded.problems)
        atomic_write_bytes(quarantine, text.encode())
        write_database(folder, loaded.workloads, loaded.entries)
        return loaded.problems


def export_best(source, destination) -> dict:
    """Keep only the best record per workload of `source` in `destination` (merged with what it holds:
    the faster record wins). Returns {"workloads": n, "updated": k}. Both must be for the same target."""
    source = _folder_of(source)
    destination = Path(destination)
    src = load_database(source, strict=True, decode="best")
    best = src.best_per_workload()
    if not best:
        raise DatabaseError(f"{source} holds no successful measurement to export")
    with locked(destination):
        remove_leftovers(destination)
        dst = load_database(destination, strict=True, decode="all", must_exist=False)
        src_meta, dst_meta = read_meta(source), read_meta(destination)
        keys = {json.dumps(target_key(e.payload[2]), sort_keys=True) for e in list(best.values()) + dst.entries}
        if len(keys) > 1:
            raise DatabaseError(
                f"{source} and {destination} hold records for different targets ({', '.join(sorted(keys))})"
            )
        workloads, modules = list(dst.workloads), [w.mod for w in dst.modules]
        kept = dst.best_per_workload()
        chosen = {index: entry for index, entry in kept.items()}
        updated = 0
        import tvm_ffi
        for s_index, entry in sorted(best.items()):
            item, mod = src.workloads[s_index], src.modules[s_index].mod
            d_index = next((i for i, w in enumerate(workloads)
                            if w[0] == item[0] and tvm_ffi.structural_equal(modules[i], mod)), None)
            if d_index is None:
                workloads.append(item)
                modules.append(mod)
                d_index = len(workloads) - 1
            old = chosen.get(d_index)
            if old is None or entry.seconds < old.seconds:
                chosen[d_index] = Entry(d_index, entry.payload)
                updated += 1
                note = src_meta["tasks"].get(item[0])
                if note:
                    dst_meta["tasks"][item[0]] = dict(note, best_ms=entry.seconds * 1e3)
        used = sorted(chosen)
        renumber = {old: new for new, old in enumerate(used)}
        write_database(destination, [workloads[i] for i in used],
                       [Entry(renumber[i], chosen[i].payload) for i in used])
        import tvm
        dst_meta["target"] = src_meta.get("target") or dst_meta.get("target")
        dst_meta["tvm"] = tvm.__version__
        dst_meta["exported"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        dst_meta["tasks"] = {k: v for k, v in dst_meta["tasks"].items() if k in {workloads[i][0] for i in used}}
        write_meta(destination, dst_meta)
        _export_strategies(source, destination)
        return {"workloads": len(used), "updated": updated}


def _export_strategies(source: Path, destination: Path) -> None:
    """The measured per-layer strategies go with the records: they decide which kernels a build has."""
    from patvm.compiler.strategy import STRATEGY_FILE, read_strategies
    measured = read_strategies(source)
    if measured:
        merged = {**(read_strategies(destination) or {}), **measured}
        atomic_write_bytes(destination / STRATEGY_FILE, json.dumps(merged, indent=1, sort_keys=True).encode())
