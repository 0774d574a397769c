"""This machine's arithmetic peaks, per thread count: AND+popcount bit-MACs/s (the bit-serial kernels'
roofline), fp32 FMA MACs/s, and int8 VNNI MACs/s where the CPU has VPDPBUSD.

    python benchmarks/roofline.py                  # 1 and 2 threads -> benchmarks/results/roofline.{json,md,png}
    python benchmarks/roofline.py --quick          # a few tenths of a second per kernel

A small C program (patvm/peaks.c, built by patvm.peaks) is compiled at run time with `cc -O3 -march=native -fopenmp`
and one -DHAVE_<path> per path /proc/cpuinfo says the CPU has: scalar POPCNT (always), the AVX2 nibble-table
(VPSHUFB) popcount, AVX-512 VPOPCNTDQ, fp32 FMA (AVX2 / AVX-512), int8 VPDPBUSD (AVX-512 VNNI / AVX-VNNI).
Every kernel is register-blocked on L1-resident data. Each (path, threads) runs --trials times; the peak is
the best trial (the machine's ceiling: load from other processes only ever lowers a trial), the median is
reported beside it. The popcount roofline is the fastest popcount path measured; `crossover_plane_pairs`
= popcount peak / fp32 MAC peak: the M*N below which bit-serial can beat fp32 at equal efficiency.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from patvm.peaks import PATHS, PeaksUnavailable, available_paths, build, run_once

NAME = "roofline"


def measure(threads: list[int], trials: int = 5, seconds: float = 0.4, tag: str = NAME) -> dict:
    """{"paths": [...], "threads": {T: {...}}} (see the module doc)."""
    paths = available_paths()
    result = {"paths": paths, "trials": trials, "seconds_per_trial": seconds, "threads": {}}
    with tempfile.TemporaryDirectory(prefix="patvm-roofline-") as tmp:
        try:
            exe = build(paths, Path(tmp))
        except PeaksUnavailable as exc:
            raise SystemExit(f"roofline.py: {exc}") from None
        common.progress(f"built {len(paths)} kernels: {', '.join(paths)}", tag)
        for t in threads:
            entry = {"paths": {}}
            for _trial in range(trials):         # trials outermost: a burst of load hits one trial of each
                for p in paths:
                    entry["paths"].setdefault(p, {"unit": PATHS[p][3], "kind": PATHS[p][2], "trials": []})
                    entry["paths"][p]["trials"].append(run_once(exe, p, t, seconds))
            for p, d in entry["paths"].items():
                d["best"] = float(max(d["trials"]))
                d["median"] = float(np.median(d["trials"]))
                common.progress(f"{t} thread(s) {p:18s} best {d['best'] / 1e9:8.1f} G{d['unit']}, "
                                f"median {d['median'] / 1e9:8.1f}", tag)
            for kind in ("popcount", "fp32", "int8"):
                cands = {p: d for p, d in entry["paths"].items() if d["kind"] == kind}
                if not cands:
                    entry[kind] = None
                    continue
                best = max(cands, key=lambda p: cands[p]["best"])
                entry[kind] = {"path": best, "per_s": cands[best]["best"], "median_per_s": cands[best]["median"]}
            if entry["popcount"] and entry["fp32"]:
                entry["crossover_plane_pairs"] = entry["popcount"]["per_s"] / entry["fp32"]["per_s"]
            result["threads"][str(t)] = entry
    return result


def popcount_peaks(threads: list[int], roofline_json: Path | None, quick: bool, tag: str) -> dict:
    """{T: popcount bit-MACs/s}: from a roofline.json that has every thread count, else measured now."""
    if roofline_json is not None and roofline_json.is_file():
        data = json.loads(roofline_json.read_text())
        have = data.get("threads", {})
        if all(str(t) in have and have[str(t)].get("popcount") for t in threads):
            common.progress(f"popcount roofline from {roofline_json}", tag)
            return {"source": str(roofline_json), "per_thread": {str(t): have[str(t)]["popcount"] for t in threads}}
    common.progress(f"no roofline.json with threads {threads}: measuring the popcount peaks now", tag)
    data = measure(threads, trials=1 if quick else 5, seconds=0.05 if quick else 0.4, tag=tag)
    return {"source": "measured by this run", "per_thread": {str(t): data["threads"][str(t)]["popcount"] for t in threads}}


def markdown(data: dict) -> str:
    lines = ["# Roofline of this machine\n", common.machine_markdown(data["machine"]), ""]
    rows = []
    for t, entry in data["threads"].items():
        for p, d in entry["paths"].items():
            rows.append([t, p, d["unit"], f"{d['best'] / 1e9:.1f}", f"{d['median'] / 1e9:.1f}",
                         f"{2 * d['best'] / 1e9:.1f}" if d["unit"] == "MAC/s" else ""])
    lines.append(common.markdown_table(["threads", "kernel", "unit", "peak (G/s)", "median (G/s)", "GFLOP/s (2 per MAC)"],
                                       rows))
    summary = []
    for t, entry in data["threads"].items():
        pc, fp, i8 = entry.get("popcount"), entry.get("fp32"), entry.get("int8")
        summary.append([t, f"{pc['path']}: {pc['per_s'] / 1e9:.1f} G" if pc else "-",
                        f"{fp['path']}: {fp['per_s'] / 1e9:.1f} G MAC/s ({2 * fp['per_s'] / 1e9:.1f} GFLOP/s)" if fp else "-",
                        f"{i8['path']}: {i8['per_s'] / 1e9:.1f} G MAC/s" if i8 else "none (no VPDPBUSD)",
                        f"{entry['crossover_plane_pairs']:.1f}" if entry.get("crossover_plane_pairs") else "-"])
    lines += ["", common.markdown_table(["threads", "popcount roofline (bit-MAC/s)", "fp32 FMA", "int8 VNNI",
                                         "M*N crossover (popcount / fp32)"], summary)]
    lines.append("\nPeak = best of the trials (load from other processes only lowers a trial). Bit-serial with "
                 "M weight and N activation planes does M*N bit-MACs per MAC, so it can beat fp32 only while "
                 "M*N < crossover (at equal efficiency of both kernels).\n")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    plt = common.pyplot()
    threads = list(data["threads"])
    paths = data["paths"]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(paths) + 2), 4))
    width = 0.8 / max(1, len(threads))
    for i, t in enumerate(threads):
        vals = [data["threads"][t]["paths"][p]["best"] / 1e9 for p in paths]
        bars = ax.bar(np.arange(len(paths)) + i * width, vals, width, label=f"{t} thread(s)")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(np.arange(len(paths)) + width * (len(threads) - 1) / 2)
    ax.set_xticklabels([f"{p}\n({PATHS[p][3]})" for p in paths], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("G ops/s (best trial)")
    ax.set_title(f"Peaks: {data['machine']['cpu']}")
    ax.legend()
    common.save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="1 trial of 0.05 s per kernel")
    parser.add_argument("--trials", type=int, default=None, help="trials per kernel and thread count (default 7)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per trial (default 0.4)")
    args = parser.parse_args(argv)
    machine = common.machine_description()
    trials = args.trials or (1 if args.quick else 7)
    seconds = args.seconds or (0.05 if args.quick else 0.4)
    data = {"machine": machine, **measure(args.threads, trials, seconds)}
    data["machine"]["load_average_at_end"] = list(__import__("os").getloadavg())
    common.write_outputs(args.out, NAME, data, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
