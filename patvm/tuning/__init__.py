"""Autotuning: MetaSchedule search over the kernels `patvm compile` builds, into a tuning database folder.

    from patvm.tuning import tune_model, open_database
    report = tune_model("model.onnx", target="host", trials=64, db="tuning/host")
    print(report.table())
    patvm.compile("model.onnx", target="host", tuning_db="tuning/host")

Modules: `database` (files, validation, atomic writes, repair, export), `tasks` (what is tuned),
`tune` (the search), `progress` (the stderr lines), `rpc` (edge boards), `workers` (builder processes).
See docs/tuning.md.
"""
from patvm.tuning.database import export_best, open_database, repair_database
from patvm.tuning.tune import SearchOptions, TuneReport, tune_model

__all__ = ["SearchOptions", "TuneReport", "export_best", "open_database", "repair_database", "tune_model"]
