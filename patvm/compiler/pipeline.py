"""The compiler, top to bottom: PA-ONNX -> Relax -> bit-serial TE operators -> a runnable TVM module.

    1. import    patvm.compiler.importer   check the ONNX, canonical PAQuantize chains, from_onnx
    2. match     patvm.compiler.match      the pattern table: quantizer -> conv2d / dense with checks
    3. lower     patvm.compiler.lower      call_tir of the packer and the bit-serial kernel, packed weights
    4. build     patvm.compiler.build      legalise + fuse (epilogues), tuned records, hand schedules
                 patvm.compiler.legalize   ReLU / MaxPool with ONNX's NaN semantics
                 patvm.compiler.fuse_packing  the next layer's packer joins a bit-serial epilogue (CPU)
                 patvm.compiler.schedules  per target family; then tvm.compile

`Pipeline` holds what a compile is made with -- the target, the strategy policy, the tuning database and
the measured strategies -- and runs the phases; `patvm compile`, `patvm tune` (patvm.tuning.tasks) and the
benchmarks go through it, so the module a tuning task is cut from is the module the build compiles.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import tvm
from tvm import relax

from patvm.compiler.build import build, prepare
from patvm.compiler.importer import import_model
from patvm.compiler.lower import LowerBinaryLayers
from patvm.compiler.strategy import StrategyPolicy, default_policy
from patvm.compiler.weight_codes import stores_weight_codes
from patvm.runtime import CompiledModel, layer_dicts
from patvm.targets import TargetSpec, resolve_target


def import_and_lower(model_or_path, policy: StrategyPolicy | None = None):
    """Phases 1-3, import and lowering: (lowered Relax module, layer reports, graph inputs)."""
    mod, _, inputs = import_model(model_or_path)
    lower = LowerBinaryLayers(policy)
    # FoldConstant first: constant weight transposes (Gemm) become constants the pattern table matches
    mod = tvm.transform.Sequential([relax.transform.FoldConstant(), lower], name="patvm_frontend")(mod)
    return mod, lower.reports, inputs


@dataclass
class Pipeline:
    """One compile: its target, strategy, tuning database (MetaSchedule's, applied by the build) and the
    measured per-layer strategies (strategies.json beside a database)."""
    spec: TargetSpec
    strategy: str = "auto"              # "auto", "bit-serial" or "fp32" (patvm.compiler.strategy)
    database: object | None = None      # MetaSchedule database the build applies, or None
    measured: dict | None = None        # workload key -> measured choice, or None
    source: dict = field(default_factory=lambda: {"database": None, "shipped": False})

    @classmethod
    def for_build(cls, target="host", tuning_db=None, strategy: str = "auto") -> Pipeline:
        """`patvm compile`: tuning_db a database folder; None: the one shipped in schedules/ for this
        target, if any; False: none (patvm's hand schedules only)."""
        spec = resolve_target(target)
        database, measured, source = open_tuning(spec, tuning_db)
        return cls(spec, strategy, database, measured, source)

    @classmethod
    def for_tuning(cls, target, db_dir=None, strategy: str = "auto") -> Pipeline:
        """`patvm tune --db DIR`: the measured strategies DIR holds (as `--tuning-db DIR` reads them), no
        records applied (the search makes them)."""
        from patvm.records import read_strategies
        return cls(resolve_target(target), strategy, None, read_strategies(db_dir))

    @property
    def policy(self) -> StrategyPolicy:
        return default_policy(self.spec, self.strategy, self.measured)

    def import_and_lower(self, model_or_path):
        """Phases 1-3 with this pipeline's strategy policy: (lowered module, layer reports, inputs)."""
        return import_and_lower(model_or_path, self.policy)

    def prepared(self, model_or_path):
        """The module right before the build (legalised, fused: one PrimFunc per kernel), reports, inputs."""
        mod, reports, inputs = self.import_and_lower(model_or_path)
        return prepare(mod, self.spec), reports, inputs

    def compile(self, model_or_path, start: float | None = None) -> CompiledModel:
        start = time.perf_counter() if start is None else start
        mod, reports, inputs = self.prepared(model_or_path)
        weight_codes = stores_weight_codes(mod)
        executable, schedules = build(mod, self.spec, self.database)
        spec = self.spec
        return CompiledModel(executable, spec.name, spec.family,
                             [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in inputs],
                             layer_dicts(reports), cross_compiler=spec.cross_compiler,
                             compile_seconds=time.perf_counter() - start, schedules={**self.source, **schedules},
                             weight_codes=weight_codes)


def compile_model(model_or_path, target="host", tuning_db=None, strategy="auto") -> CompiledModel:
    """strategy: "auto" (per layer: measured choices from the tuning database, else the target's
    M*N crossover), "bit-serial" (every exact match) or "fp32" (no lowering: TVM's fp32 build).
    tuning_db: a tuning database folder; None: the one shipped in schedules/ for this target, if any;
    False: none (patvm's hand schedules only)."""
    start = time.perf_counter()
    return Pipeline.for_build(target, tuning_db, strategy).compile(model_or_path, start)


def open_tuning(spec, tuning_db):
    """(MetaSchedule database or None, measured strategies or None, {"database": folder, "shipped": bool})."""
    from patvm import records
    shipped = tuning_db is None
    folder = records.shipped_schedules(spec) if shipped else (tuning_db or None)
    if folder is None:
        return None, None, {"database": None, "shipped": False}
    measured = records.read_strategies(folder)
    database = None
    # a folder may hold only measured strategies (patvm tune --measure-strategies --trials 0)
    if measured is None or os.path.exists(os.path.join(os.fspath(folder), records.WORKLOAD_FILE)):
        database = records.open_database_once(folder, spec)
    return database, measured, {"database": os.fspath(folder), "shipped": shipped}
