"""Repair and export of tuning databases: broken lines moved to quarantine/, the best record per workload
copied into another folder (how schedules/ is filled)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from patvm.files import atomic_write_bytes
from patvm.records import (
    QUARANTINE_DIR,
    DatabaseError,
    Entry,
    Problem,
    database_folder,
    load_database,
    read_meta,
)
from patvm.targets import target_key
from patvm.tuning.database import locked, remove_leftovers, write_database, write_meta


def repair_database(folder) -> list[Problem]:
    """Move every broken line of DIR's database to DIR/quarantine/<time>.txt and rewrite the rest."""
    folder = database_folder(folder)
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


def export_best(source, destination, keep: set[str] | None = None) -> dict:
    """Keep only the best record per workload of `source` in `destination` (merged with what it holds:
    the faster record wins); with `keep` (workload hashes), only those workloads stay in `destination`
    (records of kernels no model compiles to any more are dropped). Returns {"workloads": n, "updated": k,
    "dropped": d}. Both must be for the same target."""
    source = database_folder(source)
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
        used = sorted(i for i in chosen if keep is None or workloads[i][0] in keep)
        dropped = len(chosen) - len(used)
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
        return {"workloads": len(used), "updated": updated, "dropped": dropped}


def _export_strategies(source: Path, destination: Path) -> None:
    """The measured per-layer strategies go with the records: they decide which kernels a build has."""
    from patvm.records import STRATEGY_FILE, read_strategies
    measured = read_strategies(source)
    if measured:
        merged = {**(read_strategies(destination) or {}), **measured}
        atomic_write_bytes(destination / STRATEGY_FILE, json.dumps(merged, indent=1, sort_keys=True).encode())

