"""Measured per-layer strategy choice: bit-serial or the dequantized fp32 conv, whichever runs faster.

For every binary-layer workload of a model (patvm.compiler.workload.WorkloadKey: kind, shapes, geometry,
number of weight values, N) a stand-in layer with the same shapes and plane counts is compiled both ways
and timed alternately (A B A B); the faster wins. The choices go to DB/strategies.json, which
`patvm compile --tuning-db DB` and `patvm tune` read (patvm.records.read_strategies).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from patvm.compiler.strategy import StrategyPolicy
from patvm.compiler.workload import WorkloadKey
from patvm.files import atomic_write_bytes
from patvm.records import STRATEGY_FILE, read_strategies


def stand_in_layer(workload: str):
    """A PA-ONNX layer with the workload's shapes and plane counts (values do not change the timing)."""
    from patvm.approx import Staircase
    from patvm.onnx_format import GraphWriter
    key = WorkloadKey.parse(workload)
    x_shape, w_shape = list(key.x_shape), list(key.w_shape)
    n, values = key.N, key.values
    rng = np.random.default_rng(0)
    g = GraphWriter("stand-in")
    x = g.input("x", x_shape)
    q = g.pa_quantize(x, Staircase(np.linspace(-1, 1, n).astype(np.float32),
                                   np.linspace(0, 1, n + 1).astype(np.float32)))
    weights = rng.choice(np.linspace(-1, 1, values).astype(np.float32), size=w_shape)
    if key.kind == "dense":
        g.output(g.gemm(q, weights[:, :, 0, 0]))
    else:
        g.output(g.conv(q, weights, stride=key.stride, pad=key.pad))
    return g.model(), rng.standard_normal(x_shape).astype(np.float32)


def _median_alternating(models, x, rounds: int = 7) -> list[float]:
    samples = [[] for _ in models]
    for _ in range(rounds):
        for k, compiled in enumerate(models):
            samples[k].append(float(np.median(compiled.time(x, number=3, repeat=1, min_repeat_ms=20))))
    return [float(np.median(s)) for s in samples]


def measure_strategies(model, target, db_dir, log=sys.stderr) -> dict:
    """Time bit-serial against fp32 for every binary workload of `model`; merge into DB/strategies.json."""
    import patvm
    from patvm.compiler.pipeline import import_and_lower
    _, reports, _ = import_and_lower(model, StrategyPolicy("bit-serial"))
    workloads = sorted({r.workload for r in reports if r.strategy == "bit-serial"})
    choices = read_strategies(db_dir) or {}
    for k, workload in enumerate(workloads, 1):
        layer, x = stand_in_layer(workload)
        bit_serial = patvm.compile(layer, target=target, strategy="bit-serial")
        fp32 = patvm.compile(layer, target=target, strategy="fp32")
        t_bits, t_fp32 = _median_alternating([bit_serial, fp32], x)
        strategy = "bit-serial" if t_bits <= t_fp32 else "fp32"
        choices[workload] = {"strategy": strategy,
                             "note": f"bit-serial {t_bits:.3f} ms, fp32 {t_fp32:.3f} ms"}
        print(f"[strategies {k}/{len(workloads)}] {workload}: {choices[workload]['note']} -> {strategy}",
              file=log, flush=True)
    os.makedirs(db_dir, exist_ok=True)
    atomic_write_bytes(os.path.join(db_dir, STRATEGY_FILE), json.dumps(choices, indent=1).encode())
    return choices
