"""Autotuning: MetaSchedule search over the kernels `patvm compile` builds, into a tuning database folder.

    from patvm.tuning import tune_model, open_database
    report = tune_model("model.onnx", target="host", trials=64, db="tuning/host")
    print(report.table())
    patvm.compile("model.onnx", target="host", tuning_db="tuning/host")

Modules:
    database    writing a database folder: TuningStore (atomic flushes), the folder lock, the notes
                (reading and checking one is patvm.records, below the compiler)
    export      repair (broken lines to quarantine/) and export of the best records (schedules/)
    tasks       what is tuned: the prepared module's PrimFuncs, the hand schedule of each
    tune        tune_model: the run, its checks and its clean-up
    search      the search per task (hand baseline, MetaSchedule, re-measuring the best candidates)
    machines    builder and runner (local or RPC), measuring outside the search
    session     logs, environment, Ctrl-C handling of a run
    options     SearchOptions;  report: TaskResult, TuneReport;  progress: a bar per task
    strategies  measured per-layer strategies (strategies.json);  rpc: edge boards;  workers: builder processes
    command     `patvm tune` and `patvm rpc`
See docs/tuning.md.
"""
from patvm.records import open_database
from patvm.tuning.export import export_best, repair_database
from patvm.tuning.tune import SearchOptions, TuneReport, tune_model

__all__ = ["SearchOptions", "TuneReport", "export_best", "open_database", "repair_database", "tune_model"]
