"""Tuned vs untuned whole models: patvm's hand schedules, patvm tuned with MetaSchedule, onnxruntime fp32
and TVM fp32 (untuned and tuned with the same number of trials), side by side.

    python benchmarks/tuned.py --trials 16 --work-dir /tmp/patvm-tuned        # defaults below, 2 threads
    python benchmarks/tuned.py --models pa-resnet18 --pa-schemes 2x1 --trials 8 --only conv
    python benchmarks/tuned.py --quick                  # pa-resnet18 (2,1) at 32x32, pooling only: checks the script

Models (batch 1, 224x224, seed 0): pa-resnet18 at PA (M, N) = (2,1), (2,2), (4,5) and abc-resnet18 at ABC
(1,1), each with its full-precision twin. Steps:
  1. tune  `patvm tune` (a subprocess, TVM_NUM_THREADS = the most --threads) of every PA/ABC model with
           --measure-strategies (the per-layer bit-serial / fp32 choice), then of every twin with
           --strategy fp32, --trials per kernel, all into one database folder (a kernel two models share,
           such as the fp32 stem conv, is one task, tuned once). Resumable: rerun to continue.
  2. time  per architecture, round-robin (one sample of each per round; ratios are medians of per-round
           paired ratios):
             patvm-<model>-<MxN>        patvm.compile(PA-ONNX, tuning_db=False): hand schedules only
             patvm-<model>-<MxN>-tuned  patvm.compile(PA-ONNX, tuning_db=DB): records + measured strategies
             ort-fp32                   onnxruntime on the twin
             tvm-fp32 / tvm-fp32-tuned  patvm.compile(twin, strategy="fp32") without / with DB
Each tuned build's report of how many kernels found their record is kept ("tuned kernels"), so a record
that silently failed to apply shows. Outputs: <out>/tuned.json, tuned.md, tuned.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import models

NAME = "tuned"
DEFAULT_MODELS = ["pa-resnet18", "abc-resnet18"]
TWIN_BUILDS = {"tvm-fp32": False, "tvm-fp32-tuned": True}


def db_folder(work: Path) -> Path:
    return work / "db"


# ---------------------------------------------------------------- step 1: tuning (parent, subprocesses)
def patvm_command(args: list, threads: int, tag: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "patvm", *map(str, args)]
    common.progress("$ patvm " + " ".join(map(str, args)), tag)
    # stderr (patvm tune's progress lines) goes straight to the terminal; stdout is the report
    proc = subprocess.run(cmd, env=env, cwd=common.REPO, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{NAME}.py: `patvm {args[0]}` failed (exit {proc.returncode})")
    return proc


def tune_all(args, work: Path) -> dict:
    """Tune every model and twin into one database; returns {label: patvm tune's JSON report}."""
    threads = max(args.threads)
    search = ["--trials", args.trials, "--db", db_folder(work), "--target", "host", "--json",
              "--population", args.population, "--evolve-iters", args.evolve_iters, "--per-iter", args.per_iter]
    if args.only:
        search += ["--only", args.only]
    jobs = []
    for v in args.variants:
        paths = models.artifact_paths(work, v, v["arch"], 1, args.image_size, args.seed, "auto")
        jobs.append((v["label"], paths["onnx"], ["zoo", v["model"], "--M", v["M"], "--N", v["N"]],
                     ["--strategy", "auto", "--measure-strategies"]))
    for arch in dict.fromkeys(v["arch"] for v in args.variants):
        paths = models.artifact_paths(work, None, arch, 1, args.image_size, args.seed, "fp32")
        jobs.append((f"{arch} (twin)", paths["onnx"], ["zoo", arch], ["--strategy", "fp32"]))
    reports = {}
    for k, (label, onnx, zoo, strategy) in enumerate(jobs, 1):
        if not onnx.is_file():
            patvm_command([*zoo, "--seed", args.seed, "--image-size", args.image_size, "-o", onnx], threads, NAME)
        common.progress(f"[{k}/{len(jobs)}] tuning {label}: {args.trials} trials per kernel", NAME)
        proc = patvm_command(["tune", onnx, *strategy, *search], threads, NAME)
        reports[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return reports


# ---------------------------------------------------------------- step 2: timing (one worker per thread count)
def worker(args) -> dict:
    t, tag, settings = common.start_worker(args, NAME)
    import patvm
    from patvm.zoo import build_model
    work, size, seed, db = args.work_dir, args.image_size, args.seed, db_folder(args.work_dir)
    out = {"threads": t, "groups": {}, "artifacts": {}}
    x = np.random.default_rng(seed + 1).standard_normal((1, 3, size, size), dtype=np.float32)
    for arch in dict.fromkeys(v["arch"] for v in args.variants):
        timers, checks, members = [], {}, []
        twin_onnx = models.artifact_paths(work, None, arch, 1, size, seed, "fp32")["onnx"]
        ort_fp32 = common.ort_session(twin_onnx, t)
        want_fp32 = ort_fp32.run(None, {"input": x})[0]
        timers.append(common.ort_timer("ort-fp32", ort_fp32, {"input": x}))
        for name, tuned in TWIN_BUILDS.items():
            paths = models.artifact_paths(work, None, arch, 1, size, seed, "fp32", "-tuned" if tuned else "")
            out["artifacts"][f"{arch}/{name}"] = models.ensure_artifact(
                paths, partial(build_model, arch, seed=seed, image_size=size, show_progress=True), "fp32", tag,
                f"{arch} twin, {name}",
                tuning_db=db if tuned else False)
            compiled = patvm.load(paths["so"])
            checks[name] = common.rel_error(compiled.run(x)[0], want_fp32)
            timers.append(common.tvm_timer(name, compiled, x))
        for v in [v for v in args.variants if v["arch"] == arch]:
            want_pa = None      # onnxruntime on the PA-ONNX, once the first build has written the file
            for suffix, tuning_db in (("", False), ("-tuned", db)):
                paths = models.artifact_paths(work, v, arch, 1, size, seed, "auto", suffix)
                name = f"patvm-{v['label']}{suffix}"
                out["artifacts"][f"{arch}/{name}"] = models.ensure_artifact(
                    paths, partial(build_model, v["model"], M=v["M"], N=v["N"], seed=seed, image_size=size,
                                   show_progress=True),
                    "auto", tag, name, tuning_db=tuning_db)
                if want_pa is None:
                    want_pa = common.ort_session(paths["onnx"], t).run(None, {"input": x})[0]
                compiled = patvm.load(paths["so"])
                checks[name] = common.rel_error(compiled.run(x)[0], want_pa)
                timers.append(common.tvm_timer(name, compiled, x))
            members.append(v["label"])
        common.progress(f"{arch}: timing {len(timers)} executors round-robin", tag)
        run = common.interleaved(timers, tag=tag, label=arch, **settings)
        out["groups"][arch] = {"arch": arch, "members": members, "rel_error": checks, **run}
    return out


# ---------------------------------------------------------------- results (parent side)
def derive(raw: dict) -> list[dict]:
    rows = []
    for t, part in raw.items():
        for arch, g in part["groups"].items():
            samples = g["samples"]
            stats = {name: common.summarize(v) for name, v in samples.items()}
            arts = part["artifacts"]
            for label in g["members"]:
                u, tu = f"patvm-{label}", f"patvm-{label}-tuned"
                names = (u, tu, "ort-fp32", "tvm-fp32", "tvm-fp32-tuned")
                rows.append({
                    "threads": int(t), "arch": arch, "variant": label,
                    "untuned_ms": stats[u], "tuned_ms": stats[tu], "ort_fp32_ms": stats["ort-fp32"],
                    "tvm_fp32_ms": stats["tvm-fp32"], "tvm_fp32_tuned_ms": stats["tvm-fp32-tuned"],
                    "tuned_vs_untuned": common.paired_ratio(samples, u, tu),
                    "tuned_vs_ort_fp32": common.paired_ratio(samples, "ort-fp32", tu),
                    "tuned_vs_tvm_fp32_tuned": common.paired_ratio(samples, "tvm-fp32-tuned", tu),
                    "tvm_fp32_tuned_vs_untuned": common.paired_ratio(samples, "tvm-fp32", "tvm-fp32-tuned"),
                    "worst_ci_rel": max(stats[n]["ci_rel"] for n in names),
                    "rounds": g["rounds"], "stable": g["stable"],
                    "rel_error": {n: g["rel_error"][n] for n in (u, tu)},
                    "bit_serial_layers": {n: arts[f"{arch}/{n}"]["bit_serial_layers"] for n in (u, tu)},
                    "layers": arts[f"{arch}/{u}"]["layers"],
                    "tuned_kernels": models.tuned_kernels(arts[f"{arch}/{tu}"]),
                    "twin_tuned_kernels": models.tuned_kernels(arts[f"{arch}/tvm-fp32-tuned"]),
                })
    return rows


def markdown(data: dict) -> str:
    s = data["settings"]
    lines = [f"# Tuned vs untuned whole models ({s['image_size']}x{s['image_size']}, batch 1, "
             f"{s['trials']} MetaSchedule trials per kernel{', only kernels matching ' + repr(s['only']) if s['only'] else ''})\n",
             common.machine_markdown(data["machine"])]
    for t in sorted({r["threads"] for r in data["rows"]}):
        lines.append(f"\n## {t} thread(s)\n")
        table = [[r["variant"],
                  f"{r['bit_serial_layers']['patvm-' + r['variant']]} -> "
                  f"{r['bit_serial_layers']['patvm-' + r['variant'] + '-tuned']} / {r['layers']}",
                  r["tuned_kernels"], common.fmt_ms(r["untuned_ms"]["median"]), common.fmt_ms(r["tuned_ms"]["median"]),
                  common.fmt_ms(r["ort_fp32_ms"]["median"]), common.fmt_ms(r["tvm_fp32_ms"]["median"]),
                  common.fmt_ms(r["tvm_fp32_tuned_ms"]["median"]), r["twin_tuned_kernels"],
                  common.fmt_x(r["tuned_vs_untuned"]["median"]), common.fmt_x(r["tuned_vs_ort_fp32"]["median"]),
                  common.fmt_x(r["tuned_vs_tvm_fp32_tuned"]["median"]),
                  f"+-{100 * r['worst_ci_rel']:.1f}%{'' if r['stable'] else ' !'} ({r['rounds']})"]
                 for r in data["rows"] if r["threads"] == t]
        lines.append(common.markdown_table(
            ["model", "bit-serial layers (untuned -> tuned)", "tuned kernels", "patvm untuned ms", "patvm tuned ms",
             "ORT fp32 twin ms", "TVM fp32 twin ms", "TVM fp32 twin tuned ms", "twin tuned kernels",
             "tuned vs untuned", "tuned vs ORT fp32", "tuned vs TVM fp32 tuned", "spread (rounds)"], table))
    lines.append("\n## Per kernel (patvm tune's table: hand schedule vs best record, as measured while tuning; "
                 "kernels it searched)\n")
    for label, report in data["tune_reports"].items():
        lines.append(f"\n### {label}\n")
        lines.append(common.markdown_table(
            ["kernel", "calls", "trials", "untuned (hand) ms", "tuned ms", "build uses"],
            [[k["name"], k["weight"], k["trials"], common.fmt_ms(k["untuned_ms"]), common.fmt_ms(k["tuned_ms"]),
              k["applied"]] for k in report["tasks"] if k["trials"] or k["tuned_ms"] is not None]))
    lines.append(
        "\nRatios are medians of per-round paired ratios (> 1: the tuned patvm build is faster), every executor of "
        "one architecture timed round-robin in one loop. \"tuned kernels\" = kernels whose record the build found "
        "(the rest keep hand schedules: e.g. where the search never beat them, which `patvm tune` keeps as the "
        "record, or kernels outside --only). The tuned build also uses the measured per-layer strategies.\n")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    plt = common.pyplot()
    threads = sorted({r["threads"] for r in data["rows"]})
    fig, axes = plt.subplots(1, len(threads), figsize=(7.5 * len(threads), 4.8), squeeze=False)
    series = [("patvm untuned", "untuned_ms", "tab:blue"), ("patvm tuned", "tuned_ms", "navy"),
              ("ORT fp32 twin", "ort_fp32_ms", "black"), ("TVM fp32 twin", "tvm_fp32_ms", "silver"),
              ("TVM fp32 twin tuned", "tvm_fp32_tuned_ms", "grey")]
    for ax, t in zip(axes[0], threads):
        rows = [r for r in data["rows"] if r["threads"] == t]
        common.latency_bars(ax, rows, series, [r["variant"] for r in rows])
        ax.set_title(f"{t} thread(s), {data['settings']['trials']} trials per kernel")
    fig.suptitle(f"{data['machine']['cpu']}: tuned vs untuned, {data['settings']['image_size']}x{data['settings']['image_size']}")
    fig.tight_layout()
    common.save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_timing_args(parser)
    parser.set_defaults(threads=[2])
    models.add_model_args(parser, NAME, DEFAULT_MODELS, "2x1 2x2 4x5")
    parser.add_argument("--trials", type=int, default=None, help="MetaSchedule trials per kernel (default 16, quick 1)")
    parser.add_argument("--only", default=None, help="tune only kernels whose name contains this (quick: pool)")
    parser.add_argument("--population", type=int, default=None, help="evolutionary population (default 256, quick 16)")
    parser.add_argument("--evolve-iters", type=int, default=None, help="genetic iterations per batch (default 3, quick 1)")
    parser.add_argument("--per-iter", type=int, default=8, help="candidates per measured batch (default 8)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="models, the tuning database and modules (kept: rerun resumes; default "
                             "/tmp/patvm-tuned, quick: /tmp/patvm-tuned-quick)")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        return common.rewrite_outputs(args.from_json, args.out, NAME, markdown, plot)
    models.settle_model_args(args, DEFAULT_MODELS, [(2, 1), (2, 2), (4, 5)])
    q = args.quick
    args.trials = args.trials if args.trials is not None else (1 if q else 16)
    args.only = args.only if args.only is not None else ("pool" if q else None)
    args.population = args.population or (16 if q else 256)
    args.evolve_iters = args.evolve_iters if args.evolve_iters is not None else (1 if q else 3)
    args.work_dir = (args.work_dir or Path("/tmp/patvm-tuned-quick" if q else "/tmp/patvm-tuned")).resolve()

    if args.worker is not None:
        common.write_json(args.part, worker(args))
        return 0

    machine = common.machine_description()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    tune_reports = tune_all(args, args.work_dir)
    extra = [*models.model_args_for_worker(args), "--work-dir", str(args.work_dir), "--trials", str(args.trials)]
    raw = common.run_workers(Path(__file__).resolve(), args.threads, common.worker_passthrough(args, extra), NAME)
    machine["load_average_at_end"] = list(os.getloadavg())
    data = {"machine": machine,
            "settings": {**common.timing_settings(args), "models": args.models, "pa_schemes": args.pa_schemes,
                         "abc_schemes": args.abc_schemes, "image_size": args.image_size, "seed": args.seed,
                         "threads": args.threads, "trials": args.trials, "only": args.only,
                         "population": args.population, "evolve_iters": args.evolve_iters, "per_iter": args.per_iter,
                         "tuning_db": str(db_folder(args.work_dir))},
            "tune_reports": tune_reports, "raw": {str(t): v for t, v in raw.items()}}
    data["rows"] = derive(raw)
    common.write_outputs(args.out, NAME, data, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
