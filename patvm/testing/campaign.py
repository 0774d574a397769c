"""A fuzz campaign: graphs start .. start+graphs-1 of a seed, each generated, compiled, run and judged;
failures reported (and saved / localized on request)."""
from __future__ import annotations

import os
import sys
import time
from collections import Counter

import numpy as np

from patvm.progress import Bar, message
from patvm.testing.cases import FuzzCase, Outcome
from patvm.testing.generator import generate
from patvm.testing.localize import first_divergence
from patvm.testing.oracle import exception_summary, run_case


def save_case(case: FuzzCase, folder: str, outcome: Outcome | None = None) -> str:
    from patvm.onnx_format import save_model
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"fuzz-seed{case.seed}-graph{case.index}")
    save_model(case.model, stem + ".onnx")
    np.savez(stem + ".npz", **case.inputs)
    with open(stem + ".txt", "w") as f:
        f.write(case.label + "\n" + "\n".join(case.steps) + "\n")
        if outcome is not None:
            f.write(f"{outcome.status}: {outcome.detail}\n")
    return stem


def campaign(seed: int, graphs: int, start: int = 0, mode: str | None = None, strategy: str | None = None,
             target: str = "host",
             time_limit: float | None = None, save_failures: str | None = None, localize: bool = False,
             verbose: bool = False, out=None, **sizes) -> dict:
    """Graphs start .. start+graphs-1 of `seed`, counted by a bar on stderr; prints one line per failure (per
    graph with verbose) and a summary; returns the summary. `sizes`: GraphGenerator's max_steps / max_size /
    max_batch."""
    out = out or sys.stdout
    began = time.perf_counter()
    tried, failures, modes, bit_serial, fp32_layers, flips = 0, [], Counter(), 0, 0, 0
    with Bar(graphs, f"fuzz seed {seed}", unit="graphs", postfix="0 failures") as bar:
        for index in range(start, start + graphs):
            if time_limit is not None and time.perf_counter() - began > time_limit:
                break
            try:
                case = generate(seed, index, mode, strategy, **sizes)
            except Exception as exc:  # noqa: BLE001 - a generator bug: report it, keep going
                message(f"graph {index}: generator error {exception_summary(exc)}", out)
                failures.append(("generator-error", index, exception_summary(exc)))
                bar.advance(postfix=f"{len(failures)} failures")
                continue
            outcome = run_case(case, target)
            tried += 1
            modes[case.mode] += 1
            flips += outcome.status == "flip"
            bit_serial += outcome.bit_serial
            fp32_layers += len(outcome.layers) - outcome.bit_serial
            if verbose or not outcome.ok:
                message(f"graph {index} ({case.mode}, {case.strategy}, {len(case.steps) - 1} steps, "
                        f"{outcome.bit_serial}/{len(outcome.layers)} bit-serial, {outcome.seconds:.1f} s): "
                        f"{outcome.status} {outcome.detail}", out)
            if not outcome.ok:
                message("    " + "\n    ".join(case.steps), out)
                if localize:
                    message(f"    first divergence: {first_divergence(case, target)}", out)
                if save_failures:
                    message(f"    saved {save_case(case, save_failures, outcome)}.onnx", out)
                failures.append((outcome.signature(), index, outcome.detail))
            bar.advance(postfix=f"{len(failures)} failures")
    summary = {"seed": seed, "start": start, "graphs": tried, "modes": dict(modes), "failures": len(failures),
               "signatures": dict(Counter(sig for sig, _, _ in failures)),
               "failed_graphs": [i for _, i, _ in failures], "bit_serial_layers": bit_serial,
               "fp32_layers": fp32_layers, "rounding_flips": flips, "seconds": round(time.perf_counter() - began, 1)}
    print(f"fuzz: {tried} graphs ({', '.join(f'{v} {k}' for k, v in sorted(modes.items()))}), "
          f"{bit_serial} bit-serial and {fp32_layers} fp32 conv/dense layers, {len(failures)} failures "
          f"({flips} float graphs with a tolerated rounding flip) in {summary['seconds']} s", file=out)
    for sig, count in summary["signatures"].items():
        print(f"  {count} x {sig}", file=out)
    return summary
