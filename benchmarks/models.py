"""Whole zoo models end to end: patvm vs onnxruntime fp32 (twin), onnxruntime on the PA-ONNX, TVM fp32 (twin).

    python benchmarks/models.py                          # defaults below, 1 and 2 threads, batch 1 and 8
    python benchmarks/models.py --models pa-resnet18 --batch 1 --threads 1
    python benchmarks/models.py --quick                  # pa-resnet18 (2,1) at 32x32, batch 1: checks the script works

Models: pa-resnet18 and pa-mobilenet-v1 at PA (M, N) = (2,1) and (4,5), abc-resnet18 at ABC (1,1)
(--pa-schemes / --abc-schemes), 224x224, seed 0. Per architecture, batch and thread count these are timed
round-robin in one loop (one sample of each per round; speed-ups are medians of per-round paired ratios):
  patvm-<model>-<MxN>  patvm.compile(PA-ONNX, strategy=--strategy, default "auto"), exported .so loaded back
                       (with the tuning database shipped in schedules/ for this CPU, if there is one, as a
                       user gets it; the "tuned kernels" column says how many kernels it covered)
  ort-pa-<model>-<MxN> onnxruntime on the PA-ONNX itself (PAQuantize as its ONNX function)
  ort-fp32             onnxruntime on the full-precision twin (same seed: the weights the PA model approximates)
  ort-int8             onnxruntime on the twin statically quantised to int8 (QDQ, per-channel s8 weights, u8
                       activations, calibrated on normal inputs): what a user would pick on a VNNI / AMX CPU
  tvm-fp32             patvm.compile(twin, strategy="fp32", tuning_db=False): patvm's fp32 build of the twin
Also: compile time (patvm's compile_seconds), compiled module size (.so) vs the fp32 ONNX file, and
patvm's output checked against onnxruntime on the PA-ONNX.

Models are built and compiled once, by the first thread count's worker, into --work-dir (a temporary
folder unless given; a given one is reused as a cache: delete it after changing patvm). Outputs:
<out>/models.json, models.md, models.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

NAME = "models"
DEFAULT_MODELS = ["pa-resnet18", "pa-mobilenet-v1", "abc-resnet18"]


def parse_scheme(text: str) -> tuple[int, int]:
    m, _, n = text.lower().partition("x")
    try:
        return int(m), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scheme {text!r} is not MxN (e.g. 2x1)") from None


def add_model_args(parser, name: str, default_models: list[str], default_pa: str) -> None:
    """The options every whole-model script takes: which models and schemes, image size, seed, --from-json."""
    parser.add_argument("--models", nargs="+", default=None, help=f"default {' '.join(default_models)}")
    parser.add_argument("--pa-schemes", nargs="+", type=parse_scheme, default=None, help=f"PA MxN (default {default_pa})")
    parser.add_argument("--abc-schemes", nargs="+", type=parse_scheme, default=None, help="ABC MxN (default 1x1)")
    parser.add_argument("--image-size", type=int, default=None, help="default 224 (quick: 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-json", type=Path, default=None,
                        help=f"only rewrite {name}.md and {name}.png in --out from this {name}.json (no measuring)")


def settle_model_args(args, default_models: list[str], default_pa: list[tuple]) -> None:
    """Fill in the defaults (--quick: pa-resnet18 (2,1) at 32x32) and args.variants."""
    q = args.quick
    args.models = args.models or (["pa-resnet18"] if q else default_models)
    args.pa_schemes = args.pa_schemes or ([(2, 1)] if q else default_pa)
    args.abc_schemes = args.abc_schemes or [(1, 1)]
    args.image_size = args.image_size or (32 if q else 224)
    args.variants = variants(args)


def model_args_for_worker(args) -> list[str]:
    return ["--models", *args.models, "--pa-schemes", *[f"{m}x{n}" for m, n in args.pa_schemes],
            "--abc-schemes", *[f"{m}x{n}" for m, n in args.abc_schemes], "--image-size", str(args.image_size),
            "--seed", str(args.seed)]


def variants(args) -> list[dict]:
    """[{model, family, arch, M, N, label}] in a stable order."""
    out = []
    for model in args.models:
        family, _, arch = model.partition("-")
        if family not in ("pa", "abc"):
            raise SystemExit(f"{model}: give a binary zoo model (pa-... or abc-...); its twin is timed with it")
        for M, N in (args.pa_schemes if family == "pa" else args.abc_schemes):
            out.append({"model": model, "family": family, "arch": arch, "M": M, "N": N, "label": f"{model}-{M}x{N}"})
    return out


# ---------------------------------------------------------------- artifacts (built once, in the first worker)
def artifact_paths(work: Path, v: dict | None, arch: str, batch: int, size: int, seed: int, strategy: str,
                   build_name: str = "") -> dict:
    """Where one model's ONNX file, compiled module and its notes live; build_name tells builds apart."""
    if v is None:
        stem = f"{arch}-s{size}-b{batch}-seed{seed}"
        module = f"{stem}-tvm-fp32{build_name}"
    else:
        stem = f"{v['label']}-s{size}-b{batch}-seed{seed}"
        module = f"{stem}-patvm-{strategy}{build_name}"
    return {"onnx": work / f"{stem}.onnx", "so": work / f"{module}.so", "meta": work / f"{module}.meta.json"}


def ensure_artifact(paths: dict, build, strategy: str, tag: str, label: str, tuning_db=None) -> dict:
    """Build the ONNX file and compile + export the module unless the work dir has them; returns the meta."""
    import patvm
    from patvm.onnx_format.writer import save_model
    if paths["meta"].is_file() and paths["so"].is_file() and paths["onnx"].is_file():
        return json.loads(paths["meta"].read_text())
    if not paths["onnx"].is_file():
        common.progress(f"{label}: building the ONNX model", tag)
        save_model(build(), paths["onnx"])
    common.progress(f"{label}: compiling (strategy {strategy})", tag)
    start = time.perf_counter()
    compiled = patvm.compile(str(paths["onnx"]), target="host", strategy=strategy, tuning_db=tuning_db)
    wall = time.perf_counter() - start
    compiled.export(paths["so"])
    layers = compiled.layers
    meta = {"compile_seconds": compiled.compile_seconds, "compile_wall_seconds": wall,
            "so_bytes": paths["so"].stat().st_size, "sidecar_bytes": (paths["so"].parent / (paths["so"].name + ".json")).stat().st_size,
            "onnx_bytes": paths["onnx"].stat().st_size, "packed_weight_bytes": compiled.module_weight_bytes(),
            "layers": len(layers), "bit_serial_layers": sum(la["strategy"] == "bit-serial" for la in layers),
            "schedules": compiled.schedules}
    common.write_json(paths["meta"], meta)
    common.progress(f"{label}: compiled in {meta['compile_seconds']:.1f} s, {meta['bit_serial_layers']}/{meta['layers']} "
                    f"layers bit-serial, module {meta['so_bytes'] / 1e6:.2f} MB; {compiled.schedules_line()}", tag)
    return meta


def worker(args) -> dict:
    t, tag, settings = common.start_worker(args, NAME)
    import patvm
    from patvm.zoo import build_model
    work = args.work_dir
    out = {"threads": t, "groups": {}, "artifacts": {}}
    archs = list(dict.fromkeys(v["arch"] for v in args.variants))
    for arch in archs:
        for batch in args.batch:
            group = f"{arch}-b{batch}"
            size, seed = args.image_size, args.seed
            twin = artifact_paths(work, None, arch, batch, size, seed, "fp32")
            # TVM's own fp32 build: no patvm tuning database, not even a shipped one
            twin_meta = ensure_artifact(twin, partial(build_model, arch, seed=seed, batch=batch, image_size=size,
                                                      show_progress=True),
                                        "fp32", tag, f"{arch} (twin) batch {batch}", tuning_db=False)
            out["artifacts"][f"{group}/tvm-fp32"] = twin_meta
            x = np.random.default_rng(seed + 1).standard_normal((batch, 3, size, size), dtype=np.float32)
            ort_fp32 = common.ort_session(twin["onnx"], t)
            int8 = common.ort_int8_model(twin["onnx"], twin["onnx"].with_suffix(".int8.onnx"), "input", x.shape, seed)
            timers = [common.ort_timer("ort-fp32", ort_fp32, {"input": x}),
                      common.ort_timer("ort-int8", common.ort_session(int8, t), {"input": x})]
            tvm_fp32 = patvm.load(twin["so"])
            timers.append(common.tvm_timer("tvm-fp32", tvm_fp32, x))
            checks = {"tvm-fp32": common.rel_error(tvm_fp32.run(x)[0], ort_fp32.run(None, {"input": x})[0])}
            members = []
            for v in [v for v in args.variants if v["arch"] == arch]:
                paths = artifact_paths(work, v, arch, batch, size, seed, args.strategy)
                meta = ensure_artifact(paths, partial(build_model, v["model"], M=v["M"], N=v["N"], seed=seed,
                                                      batch=batch, image_size=size, show_progress=True),
                                       args.strategy, tag, f"{v['label']} batch {batch}")
                out["artifacts"][f"{group}/{v['label']}"] = meta
                ort_pa = common.ort_session(paths["onnx"], t)
                compiled = patvm.load(paths["so"])
                checks[v["label"]] = common.rel_error(compiled.run(x)[0], ort_pa.run(None, {"input": x})[0])
                timers.append(common.tvm_timer(f"patvm-{v['label']}", compiled, x))
                timers.append(common.ort_timer(f"ort-pa-{v['label']}", ort_pa, {"input": x}))
                members.append(v["label"])
            common.progress(f"{group}: timing {len(timers)} executors round-robin", tag)
            run = common.interleaved(timers, tag=tag, label=group, **settings)
            out["groups"][group] = {"arch": arch, "batch": batch, "members": members,
                                    "rel_error_vs_ort": checks, **run}
            del timers
    return out


# ---------------------------------------------------------------- results (parent side)
def derive(raw: dict, args) -> tuple[list[dict], list[dict]]:
    rows, sizes = [], {}
    for t, part in raw.items():
        for group, g in part["groups"].items():
            samples = g["samples"]
            stats = {name: common.summarize(v) for name, v in samples.items()}
            twin_meta = part["artifacts"][f"{group}/tvm-fp32"]
            for label in g["members"]:
                p, o = f"patvm-{label}", f"ort-pa-{label}"
                meta = part["artifacts"][f"{group}/{label}"]
                rows.append({
                    "threads": int(t), "arch": g["arch"], "batch": g["batch"], "variant": label,
                    "patvm_ms": stats[p], "ort_pa_ms": stats[o], "ort_fp32_ms": stats["ort-fp32"],
                    "tvm_fp32_ms": stats["tvm-fp32"], "ort_int8_ms": stats["ort-int8"],
                    "speedup_vs_ort_fp32": common.paired_ratio(samples, "ort-fp32", p),
                    "speedup_vs_ort_int8": common.paired_ratio(samples, "ort-int8", p),
                    "speedup_vs_ort_pa": common.paired_ratio(samples, o, p),
                    "speedup_vs_tvm_fp32": common.paired_ratio(samples, "tvm-fp32", p),
                    "worst_ci_rel": max(stats[n]["ci_rel"] for n in (p, o, "ort-fp32", "ort-int8", "tvm-fp32")),
                    "rounds": g["rounds"], "stable": g["stable"],
                    "rel_error_vs_ort_pa": g["rel_error_vs_ort"][label],
                    "bit_serial_layers": meta["bit_serial_layers"], "layers": meta["layers"],
                    "tuned_kernels": tuned_kernels(meta),
                })
                sizes[(label, g["batch"])] = {
                    "variant": label, "batch": g["batch"], "arch": g["arch"], "strategy": args.strategy,
                    "patvm_compile_seconds": meta["compile_seconds"],
                    "tvm_fp32_compile_seconds": twin_meta["compile_seconds"],
                    "patvm_so_bytes": meta["so_bytes"], "patvm_sidecar_bytes": meta["sidecar_bytes"],
                    "patvm_packed_weight_bytes": meta["packed_weight_bytes"],
                    "tvm_fp32_so_bytes": twin_meta["so_bytes"], "fp32_onnx_bytes": twin_meta["onnx_bytes"],
                    "pa_onnx_bytes": meta["onnx_bytes"],
                    "so_vs_fp32_onnx": meta["so_bytes"] / twin_meta["onnx_bytes"],
                    "bit_serial_layers": meta["bit_serial_layers"], "layers": meta["layers"],
                }
    return rows, list(sizes.values())


def tuned_kernels(meta: dict) -> str:
    """"k/n" kernels scheduled from a tuning database, "-" when none was used (or not recorded)."""
    schedules = meta.get("schedules") or {}
    return f"{len(schedules['tuned'])}/{schedules['kernels']}" if schedules.get("database") else "-"


def markdown(data: dict) -> str:
    s = data["settings"]
    lines = [f"# Whole models ({s['image_size']}x{s['image_size']}, patvm strategy \"{s['strategy']}\")\n",
             common.machine_markdown(data["machine"])]
    for t in sorted({r["threads"] for r in data["rows"]}):
        lines.append(f"\n## {t} thread(s)\n")
        table = [[r["variant"], r["batch"], f"{r['bit_serial_layers']}/{r['layers']}", r.get("tuned_kernels", "-"),
                  common.fmt_ms(r["patvm_ms"]["median"]), common.fmt_ms(r["ort_fp32_ms"]["median"]),
                  common.fmt_ms(r["ort_int8_ms"]["median"]),
                  common.fmt_ms(r["ort_pa_ms"]["median"]), common.fmt_ms(r["tvm_fp32_ms"]["median"]),
                  common.fmt_x(r["speedup_vs_ort_fp32"]["median"]), common.fmt_x(r["speedup_vs_ort_int8"]["median"]),
                  common.fmt_x(r["speedup_vs_ort_pa"]["median"]),
                  common.fmt_x(r["speedup_vs_tvm_fp32"]["median"]),
                  f"+-{100 * r['worst_ci_rel']:.1f}%{'' if r['stable'] else ' !'} ({r['rounds']})"]
                 for r in data["rows"] if r["threads"] == t]
        lines.append(common.markdown_table(
            ["model", "batch", "bit-serial layers", "tuned kernels", "patvm ms", "ORT fp32 twin ms", "ORT int8 twin ms",
             "ORT PA-ONNX ms", "TVM fp32 twin ms", "vs ORT fp32", "vs ORT int8", "vs ORT PA-ONNX", "vs TVM fp32",
             "spread (rounds)"], table))
    lines.append("\n## Size and compile time\n")
    table = [[z["variant"], z["batch"], f"{z['patvm_so_bytes'] / 1e6:.2f}", f"{z['patvm_packed_weight_bytes'] / 1e6:.2f}",
              f"{z['tvm_fp32_so_bytes'] / 1e6:.2f}", f"{z['fp32_onnx_bytes'] / 1e6:.2f}", f"{z['so_vs_fp32_onnx']:.3f}",
              f"{z['patvm_compile_seconds']:.1f}", f"{z['tvm_fp32_compile_seconds']:.1f}"] for z in data["sizes"]]
    lines.append(common.markdown_table(
        ["model", "batch", "patvm .so MB", "packed binary weights MB", "TVM fp32 .so MB", "fp32 ONNX MB",
         ".so / fp32 ONNX", "patvm compile s", "TVM fp32 compile s"], table))
    lines.append(
        "\nSpeed-ups are medians of per-round paired ratios (other / patvm; > 1 = patvm faster), every executor of "
        "one architecture and batch timed round-robin in one loop. The twin is the full-precision model with the "
        "real weights the PA/ABC model approximates. spread = the worst relative half-width of a ~95% interval "
        "of the row's medians ('!' = not within the target before --max-seconds ran out). Compile times are "
        "patvm's compile_seconds (import to executable, no export).\n")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    plt = common.pyplot()
    threads = sorted({r["threads"] for r in data["rows"]})
    fig, axes = plt.subplots(1, len(threads) + 1, figsize=(6.5 * (len(threads) + 1), 4.8), squeeze=False)
    series = [("patvm", "patvm_ms", None), ("ORT fp32 twin", "ort_fp32_ms", "black"),
              ("ORT int8 twin", "ort_int8_ms", "tab:purple"), ("ORT PA-ONNX", "ort_pa_ms", "tab:brown"),
              ("TVM fp32 twin", "tvm_fp32_ms", "grey")]
    for ax, t in zip(axes[0], threads):
        rows = [r for r in data["rows"] if r["threads"] == t]
        common.latency_bars(ax, rows, series, [f"{r['variant']}\nb{r['batch']}" for r in rows], rotate=True)
        ax.set_yscale("log")
        ax.set_title(f"{t} thread(s)")
    ax = axes[0][-1]
    sizes = [z for z in data["sizes"] if z["batch"] == min(z2["batch"] for z2 in data["sizes"])]
    width = 0.85 / 3
    for i, (name, key, color) in enumerate([("patvm .so", "patvm_so_bytes", None), ("TVM fp32 .so", "tvm_fp32_so_bytes", "grey"),
                                            ("fp32 ONNX", "fp32_onnx_bytes", "black")]):
        bars = ax.bar(np.arange(len(sizes)) + i * width, [z[key] / 1e6 for z in sizes], width, label=name, color=color)
        ax.bar_label(bars, fmt="%.1f", fontsize=6)
    ax.set_xticks(np.arange(len(sizes)) + width)
    ax.set_xticklabels([z["variant"] for z in sizes], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("MB")
    ax.set_title(f"module size (batch {sizes[0]['batch'] if sizes else '-'})")
    ax.legend(fontsize=7)
    fig.suptitle(f"{data['machine']['cpu']}: whole models, {data['settings']['image_size']}x{data['settings']['image_size']}")
    fig.tight_layout()
    common.save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_timing_args(parser)
    add_model_args(parser, NAME, DEFAULT_MODELS, "2x1 4x5")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 1 8)")
    parser.add_argument("--strategy", default="auto", choices=["auto", "bit-serial"], help="patvm's strategy")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where models and modules are built (kept and reused; default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        return common.rewrite_outputs(args.from_json, args.out, NAME, markdown, plot)
    settle_model_args(args, DEFAULT_MODELS, [(2, 1), (4, 5)])
    args.batch = args.batch or ([1] if args.quick else [1, 8])

    if args.worker is not None:
        common.write_json(args.part, worker(args))
        return 0

    machine = common.machine_description()
    temp = None
    if args.work_dir is None:
        temp = tempfile.mkdtemp(prefix="patvm-models-")
        work = Path(temp)
    else:
        work = args.work_dir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    try:
        extra = [*model_args_for_worker(args), "--batch", *map(str, args.batch), "--strategy", args.strategy,
                 "--work-dir", str(work)]
        raw = common.run_workers(Path(__file__).resolve(), args.threads, common.worker_passthrough(args, extra), NAME)
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    machine["load_average_at_end"] = list(os.getloadavg())
    data = {"machine": machine,
            "settings": {**common.timing_settings(args), "models": args.models, "pa_schemes": args.pa_schemes,
                         "abc_schemes": args.abc_schemes, "batch": args.batch, "image_size": args.image_size,
                         "strategy": args.strategy, "seed": args.seed, "threads": args.threads},
            "raw": {str(t): v for t, v in raw.items()}}
    data["rows"], data["sizes"] = derive(raw, args)
    common.write_outputs(args.out, NAME, data, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
