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
    M*N crossover), "bit-serial" (every exact match) or "fp32" (no lowering: TVM's fp32 build)."""
    start = time.perf_counter()
    spec = resolve_target(target)
    database, measured = None, None
    if tuning_db is not None:
        from patvm.tuning.database import WORKLOAD_FILE, open_database
        measured = read_strategies(tuning_db)
        # a folder may hold only measured strategies (patvm tune --measure-strategies --trials 0)
        if measured is None or os.path.exists(os.path.join(os.fspath(tuning_db), WORKLOAD_FILE)):
            database = open_database(tuning_db, target=spec)
    mod, reports, inputs = frontend(model_or_path, default_policy(spec, strategy, measured))
    mod = prepare(mod, spec)
    executable = build(mod, spec, database)
    return CompiledModel(executable, spec.name, spec.family,
                         [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in inputs],
                         layer_dicts(reports), cross_compiler=spec.cross_compiler,
                         compile_seconds=time.perf_counter() - start)
