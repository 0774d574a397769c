"""The compiler, top to bottom: PA-ONNX -> Relax -> bit-serial TE operators -> a runnable TVM module.

    1. import    patvm.compiler.importer   check the ONNX, canonical PAQuantize chains, from_onnx
    2. match     patvm.compiler.match      the pattern table: quantizer -> conv2d / dense with checks
    3. lower     patvm.compiler.lower      call_tir of the packer and the bit-serial kernel, packed weights
    4. build     patvm.compiler.build      legalise + fuse (epilogues), tuned records, hand schedules
                 patvm.compiler.legalize   ReLU / MaxPool with ONNX's NaN semantics
                 patvm.compiler.fuse_packing  the next layer's packer joins a bit-serial epilogue (CPU)
                 patvm.compiler.schedules  per target family; then tvm.compile
"""
from __future__ import annotations

import os
import time

from tvm import relax

from patvm.compiler.build import build, prepare
from patvm.compiler.importer import import_model
from patvm.compiler.lower import lower_binary_layers
from patvm.compiler.strategy import StrategyPolicy, default_policy, read_strategies
from patvm.runtime import CompiledModel, layer_dicts
from patvm.targets import resolve_target


def frontend(model_or_path, policy: StrategyPolicy | None = None):
    """Phases 1-3: (lowered Relax module, layer reports, graph inputs)."""
    mod, _, inputs = import_model(model_or_path)
    mod = relax.transform.FoldConstant()(mod)   # constant weight transposes (Gemm) become constants
    mod, reports = lower_binary_layers(mod, policy)
    return mod, reports, inputs


def compile_model(model_or_path, target="host", tuning_db=None, strategy="auto") -> CompiledModel:
    """strategy: "auto" (per layer: measured choices from the tuning database, else the target's
    M*N crossover), "bit-serial" (every exact match) or "fp32" (no lowering: TVM's fp32 build).
    tuning_db: a tuning database folder; None: the one shipped in schedules/ for this target, if any;
    False: none (patvm's hand schedules only)."""
    start = time.perf_counter()
    spec = resolve_target(target)
    database, measured, source = open_tuning(spec, tuning_db)
    mod, reports, inputs = frontend(model_or_path, default_policy(spec, strategy, measured))
    mod = prepare(mod, spec)
    executable, schedules = build(mod, spec, database)
    return CompiledModel(executable, spec.name, spec.family,
                         [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in inputs],
                         layer_dicts(reports), cross_compiler=spec.cross_compiler,
                         compile_seconds=time.perf_counter() - start, schedules={**source, **schedules})


def open_tuning(spec, tuning_db):
    """(MetaSchedule database or None, measured strategies or None, {"database": folder, "shipped": bool})."""
    from patvm import records as dbmod
    shipped = tuning_db is None
    folder = dbmod.shipped_schedules(spec) if shipped else (tuning_db or None)
    if folder is None:
        return None, None, {"database": None, "shipped": False}
    measured = read_strategies(folder)
    database = None
    # a folder may hold only measured strategies (patvm tune --measure-strategies --trials 0)
    if measured is None or os.path.exists(os.path.join(os.fspath(folder), dbmod.WORKLOAD_FILE)):
        database = dbmod.open_database_once(folder, spec)
    return database, measured, {"database": os.fspath(folder), "shipped": shipped}
