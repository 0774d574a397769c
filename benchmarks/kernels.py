"""Where a whole model's time goes: every kernel call of one inference timed on its own.

    python benchmarks/kernels.py MODEL.so [MODEL2.so ...] [--runs 30] [--top 25]
    python benchmarks/kernels.py MODEL.onnx --strategy fp32      # compiles first (host target)

Each VM call (a PrimFunc or a builtin) is timed by the Relax VM's instrument hook, before and after the
call, over --runs inferences after a warm-up; the table gives per call site the median time, its share of
the summed kernel time, and the output shape. The hook costs a few microseconds a call: the summed time is
a little above a plain run's. Set TVM_NUM_THREADS (default here: 1). Outputs: <out>/kernels-<model>.json
and .md (a table for each model).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def load(path: Path, strategy: str):
    import patvm
    if path.suffix == ".onnx":
        return patvm.compile(str(path), target="host", strategy=strategy)
    return patvm.load(path)


def profile(compiled, runs: int) -> list[dict]:
    """Per call site (in call order): name, output shape, median ms over `runs` inferences."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(compiled.module, tvm.cpu(0))
    inputs = [tvm.runtime.tensor(np.random.default_rng(0).standard_normal(i["shape"]).astype(i["dtype"]))
              for i in compiled.inputs] + compiled.expanded_weights()
    samples: list[list[float]] = []
    names: list[str] = []
    shapes: list[str] = []
    state = {"site": 0, "start": 0.0, "record": False}

    def instrument(func, name, before_run, ret_value, *args):
        if before_run:
            state["start"] = time.perf_counter()
            return 0
        elapsed = (time.perf_counter() - state["start"]) * 1e3
        if state["record"]:
            site = state["site"]
            if site == len(samples):
                samples.append([])
                names.append(str(name))
                out = args[-1] if args else None
                shapes.append("x".join(str(d) for d in out.shape) if hasattr(out, "shape") else "")
            samples[site].append(elapsed)
            state["site"] += 1
        return 0

    vm.set_instrument(instrument)
    for _ in range(3):
        vm["main"](*inputs)
    state["record"] = True
    for _ in range(runs):
        state["site"] = 0
        vm["main"](*inputs)
    return [{"site": i, "name": n, "out_shape": s, "ms": float(np.median(t))}
            for i, (n, s, t) in enumerate(zip(names, shapes, samples))]


def markdown(model: str, rows: list[dict], top: int) -> str:
    total = sum(r["ms"] for r in rows)
    by_time = sorted(rows, key=lambda r: -r["ms"])[:top]
    table = common.markdown_table(
        ["#", "kernel", "output", "ms", "share"],
        [[r["site"], f"`{r['name']}`", r["out_shape"], f"{r['ms']:.3f}", f"{100 * r['ms'] / total:.1f}%"]
         for r in by_time])
    return (f"## {model}\n\n{len(rows)} calls, summed {total:.2f} ms; the {len(by_time)} slowest:\n\n"
            f"{table}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--strategy", default="auto", help="for .onnx inputs (default auto)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    machine = common.machine_description(sys.argv)
    for path in args.models:
        model = path.name.removesuffix(".so").removesuffix(".onnx")
        common.progress(f"profiling {model}")
        rows = profile(load(path, args.strategy), args.runs)
        data = {"machine": machine, "model": model, "runs": args.runs, "calls": rows}
        text = f"# Kernels of {model}\n\n{common.machine_markdown(machine)}\n\n{markdown(model, rows, args.top)}"
        common.write_json(args.out / f"kernels-{model}.json", data)
        common.write_text(args.out / f"kernels-{model}.md", text)
        print(markdown(model, rows, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
