"""Writing tuning databases (`patvm tune`): atomically, one run per folder. Reading and checking them is
patvm.records (the compiler's side); repair and export are patvm.tuning.export.

MetaSchedule's own JSONDatabase appends to both files as it goes, so a killed run can leave half a line.
patvm tunes into an in-memory database instead (`TuningStore`) and, after every measured batch, rewrites
both files through a temporary file + rename (`patvm.files.atomic_path`): the workload file first, then the
record file (records only refer to workloads already written). A run killed at any instant leaves the files
of the last completed batch; the next `patvm tune` with the same arguments counts the records per task and
only runs the remaining trials. A lock (DIR/.lock, `filelock`: an flock released by the kernel when the
process dies) keeps two tuning runs out of one folder.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from patvm.files import atomic_write_bytes
from patvm.records import (
    FAILED_SECS,
    META_FILE,
    META_FORMAT,
    QUARANTINE_DIR,
    RECORD_FILE,
    SCHEDULES_DIR,
    WORKLOAD_FILE,
    DatabaseError,
    Entry,
    LoadedDatabase,
    Problem,
    check_target,
    database_paths,
    load_database,
    memory_database,
    open_database,
    open_database_once,
    read_meta,
    record_seconds,
    shipped_schedules,
    trace_digest,
)
from patvm.targets import target_key

LOCK_FILE = ".lock"

__all__ = [   # the reading side too, so that `patvm.tuning.database` stays the one module for a database
    "FAILED_SECS", "LOCK_FILE", "META_FILE", "META_FORMAT", "QUARANTINE_DIR", "RECORD_FILE", "SCHEDULES_DIR",
    "WORKLOAD_FILE", "DatabaseError", "Entry", "LoadedDatabase", "Problem", "TuningStore", "check_target",
    "database_paths", "load_database", "locked", "open_database", "open_database_once", "read_meta",
    "record_seconds", "remove_leftovers", "shipped_schedules", "target_key", "trace_digest", "write_database",
    "write_meta",
]


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
    import filelock
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    lock = filelock.FileLock(path, mode=0o644, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        try:
            other = path.read_bytes()[:32].decode(errors="replace").strip()
        except OSError:
            other = ""
        raise DatabaseError(f"{folder} is in use by another patvm tune (pid {other or '?'}); "
                            "wait for it or use another --db folder") from None
    try:
        path.write_text(f"{os.getpid()}\n")   # for the message above in another run (the lock is on the inode)
        yield
    finally:
        lock.release()


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
        self.database = memory_database(loaded)
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


