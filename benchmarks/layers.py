"""Single ResNet18 conv layers: patvm bit-serial and patvm's chosen strategy vs onnxruntime fp32 and TVM fp32.

    python benchmarks/layers.py                                   # everything, 1 and 2 threads
    python benchmarks/layers.py --threads 1 --layers 3x3 --schemes pa2x1 pa2x2 abc1x1
    python benchmarks/layers.py --quick                           # tiny shapes: checks the script works

Layers (batch 1, NCHW): ResNet18's four 3x3 stride-1 convs (64x56x56, 128x28x28, 256x14x14, 512x7x7) and
its three 1x1 stride-2 downsampling convs (64->128 @56, 128->256 @28, 256->512 @14). Schemes: PA (M, N) in
(2,1) (2,2) (4,4) (4,5) (8,7) and ABC-Net (1,1) (3,3), named pa2x1 ... abc3x3.

Per layer and thread count, these executors are timed round-robin in one loop (one sample of each per
round, so load from other processes hits them alike; speed-ups are medians of per-round paired ratios):
  ort-fp32     onnxruntime on the fp32 layer (x -> Conv(W), no quantizer)
  ort-int8     onnxruntime on the fp32 layer statically quantised to int8 (QDQ, per-channel s8 weights, u8 activations)
  tvm-fp32     patvm.compile(fp32 layer, strategy="fp32"): patvm's fp32 build of the same layer
  bs-<scheme>  patvm.compile(PA layer, strategy="bit-serial"): x -> PAQuantize -> Conv(W_bar), bit-serial
  auto-<s>     patvm.compile(PA layer, strategy="auto"), only where its choice differs from bit-serial
               (where it is the same, the auto column repeats bs-<scheme>)
Rounds go on until every median's ~95% interval is within +-target-ci (default 2%) or --max-seconds.
Roofline fraction = M*N*MACs / bit-serial latency / popcount peak (M, N: the planes patvm's report gives);
the peak comes from --roofline (default <out>/roofline.json, written by roofline.py), else it is measured.
Every bit-serial and auto output is checked against onnxruntime on the PA layer before timing.
Outputs: <out>/layers.json (all samples), layers.md, layers.png.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

NAME = "layers"

# key -> (in channels, out channels, input size, kernel, stride)
LAYERS = {
    "3x3-64x56": (64, 64, 56, 3, 1),
    "3x3-128x28": (128, 128, 28, 3, 1),
    "3x3-256x14": (256, 256, 14, 3, 1),
    "3x3-512x7": (512, 512, 7, 3, 1),
    "1x1s2-64to128x56": (64, 128, 56, 1, 2),
    "1x1s2-128to256x28": (128, 256, 28, 1, 2),
    "1x1s2-256to512x14": (256, 512, 14, 1, 2),
}
QUICK_LAYERS = {
    "3x3-16x8": (16, 16, 8, 3, 1),
    "1x1s2-16to32x8": (16, 32, 8, 1, 2),
}
SCHEMES = {
    "pa2x1": ("pa", 2, 1), "pa2x2": ("pa", 2, 2), "pa4x4": ("pa", 4, 4), "pa4x5": ("pa", 4, 5),
    "pa8x7": ("pa", 8, 7), "abc1x1": ("abc", 1, 1), "abc3x3": ("abc", 3, 3),
}
QUICK_SCHEMES = ["pa2x1", "abc1x1"]


def describe(key: str) -> str:
    c, o, h, k, s = {**LAYERS, **QUICK_LAYERS}[key]
    return f"conv{k}x{k} {c}x{h}x{h}" if s == 1 else f"conv{k}x{k}/{s} {c}->{o} @{h}"


def macs(key: str, batch: int) -> int:
    c, o, h, k, s = {**LAYERS, **QUICK_LAYERS}[key]
    pad = k // 2
    out = (h + 2 * pad - k) // s + 1
    return batch * o * out * out * c * k * k


def select_layers(names: list[str] | None, quick: bool) -> list[str]:
    table = QUICK_LAYERS if quick else LAYERS
    if not names:
        return list(table)
    chosen = []
    for name in names:
        hits = [k for k in {**LAYERS, **QUICK_LAYERS} if k == name or k.startswith(name + "-")]
        if not hits:
            raise SystemExit(f"unknown layer {name!r}: one of 3x3, 1x1s2, {', '.join([*LAYERS, *QUICK_LAYERS])}")
        chosen += [k for k in hits if k not in chosen and (k in table or name == k)]
    return chosen


# ---------------------------------------------------------------- models (worker side)
def layer_models(key: str, schemes: list[str], batch: int, seed: int):
    """(input, fp32 model, {scheme: PA model}); the PA models approximate the fp32 model's weights."""
    from patvm.onnx_format import GraphWriter
    from patvm.zoo.schemes import Scheme
    c, o, h, k, s = {**LAYERS, **QUICK_LAYERS}[key]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, h), dtype=np.float32)
    w = rng.standard_normal((o, c, k, k), dtype=np.float32) * np.float32(math.sqrt(2.0 / (o * k * k)))

    def model(scheme):
        g = GraphWriter(f"{key}-{scheme or 'fp32'}")
        inp = g.input("x", [batch, c, h, h])
        if scheme is None:
            y = g.conv(inp, w, stride=s, pad=k // 2)
        else:
            sch = Scheme(*SCHEMES[scheme])
            y = g.conv(g.pa_quantize(inp, sch.staircase(x)), sch.approximate(w), stride=s, pad=k // 2)
        g.output(y)
        return g.model()

    return x, model(None), {sc: model(sc) for sc in schemes}


def worker(args) -> dict:
    t, tag, settings = common.start_worker(args, NAME)
    import patvm
    out = {"threads": t, "layers": {}}
    for key in args.layer_keys:
        x, fp32_model, pa_models = layer_models(key, args.scheme_names, args.batch, args.seed)
        common.progress(f"{key} ({describe(key)}): compiling fp32 + {len(pa_models)} scheme(s)", tag)
        ort_fp32 = common.ort_session(fp32_model, t)
        start = time.perf_counter()
        tvm_fp32 = patvm.compile(fp32_model, target="host", strategy="fp32")
        entry = {"macs": macs(key, args.batch), "compile_seconds": {"tvm-fp32": time.perf_counter() - start},
                 "schemes": {}}
        want_fp32 = ort_fp32.run(None, {"x": x})[0]
        entry["check_tvm_fp32_rel_error"] = common.rel_error(tvm_fp32.run(x)[0], want_fp32)
        timers = [common.ort_timer("ort-fp32", ort_fp32, {"x": x}), common.tvm_timer("tvm-fp32", tvm_fp32, x)]
        with tempfile.TemporaryDirectory() as tmp:
            from patvm.onnx_format import save_model
            save_model(fp32_model, Path(tmp) / "fp32.onnx")
            int8 = common.ort_int8_model(Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", "x", x.shape, args.seed)
            timers.append(common.ort_timer("ort-int8", common.ort_session(int8, t), {"x": x}))
        keep = [tvm_fp32]
        for scheme, model in pa_models.items():
            want = common.ort_session(model, t).run(None, {"x": x})[0]
            info = {}
            for strategy in ("bit-serial", "auto"):
                start = time.perf_counter()
                compiled = patvm.compile(model, target="host", strategy=strategy)
                info[f"compile_seconds_{strategy}"] = time.perf_counter() - start
                (layer,) = [la for la in compiled.layers]
                info[strategy] = {"strategy": layer["strategy"], "M": layer.get("M"), "N": layer.get("N"),
                                  "reason": layer.get("reason"),
                                  "rel_error_vs_ort": common.rel_error(compiled.run(x)[0], want)}
                if strategy == "bit-serial":
                    if layer["strategy"] != "bit-serial":
                        raise SystemExit(f"{key} {scheme}: patvm did not lower the layer bit-serial: {layer}")
                    timers.append(common.tvm_timer(f"bs-{scheme}", compiled, x))
                    timers.append(common.run_timer(f"run-{scheme}", compiled, x))
                    keep.append(compiled)
                elif layer["strategy"] != "bit-serial":
                    timers.append(common.tvm_timer(f"auto-{scheme}", compiled, x))
                    keep.append(compiled)
            info["plane_pairs"] = int(info["bit-serial"]["M"] or 0) * int(info["bit-serial"]["N"] or 0)
            worst = max(info["bit-serial"]["rel_error_vs_ort"], info["auto"]["rel_error_vs_ort"])
            if worst > 1e-3:
                common.progress(f"WARNING {key} {scheme}: output differs from onnxruntime by {worst:.2e} (relative)", tag)
            entry["schemes"][scheme] = info
        common.progress(f"{key}: timing {len(timers)} executors round-robin", tag)
        run = common.interleaved(timers, tag=tag, label=key, **settings)
        entry.update(run)
        out["layers"][key] = entry
        del keep
    return out


# ---------------------------------------------------------------- results (parent side)
def derive(raw: dict, peaks: dict, batch: int) -> list[dict]:
    """One row per (threads, layer, scheme)."""
    rows = []
    for t, part in raw.items():
        peak = (peaks["per_thread"].get(str(t)) or {}).get("per_s")
        for key, entry in part["layers"].items():
            samples = entry["samples"]
            stats = {name: common.summarize(v) for name, v in samples.items()}
            for scheme, info in entry["schemes"].items():
                bs, auto, run = f"bs-{scheme}", f"auto-{scheme}", f"run-{scheme}"
                auto_name = auto if auto in samples else bs
                pairs = info["plane_pairs"]
                bs_ms = stats[bs]["median"]
                bit_macs = pairs * entry["macs"]
                involved = ["ort-fp32", "ort-int8", "tvm-fp32", bs, auto_name]
                rows.append({
                    "threads": int(t), "layer": key, "description": describe(key), "macs": entry["macs"],
                    "scheme": scheme, "family": SCHEMES[scheme][0], "M_nominal": SCHEMES[scheme][1],
                    "N_nominal": SCHEMES[scheme][2], "M": info["bit-serial"]["M"], "N": info["bit-serial"]["N"],
                    "plane_pairs": pairs,
                    "bit_serial_ms": stats[bs],
                    "auto_strategy": info["auto"]["strategy"], "auto_reason": info["auto"]["reason"],
                    "auto_ms": stats[auto_name],
                    "ort_fp32_ms": stats["ort-fp32"], "tvm_fp32_ms": stats["tvm-fp32"], "ort_int8_ms": stats["ort-int8"],
                    "speedup_bit_serial_vs_ort_int8": common.paired_ratio(samples, "ort-int8", bs),
                    "speedup_bit_serial_vs_ort_fp32": common.paired_ratio(samples, "ort-fp32", bs),
                    "run_ms": stats.get(run),        # CompiledModel.run(x): the kernels plus what a call adds
                    "run_overhead_us": (stats[run]["median"] - bs_ms) * 1e3 if run in stats else None,
                    "speedup_run_vs_ort_fp32": common.paired_ratio(samples, "ort-fp32", run) if run in stats else None,
                    "speedup_auto_vs_ort_fp32": common.paired_ratio(samples, "ort-fp32", auto_name),
                    "speedup_bit_serial_vs_tvm_fp32": common.paired_ratio(samples, "tvm-fp32", bs),
                    "speedup_tvm_fp32_vs_ort_fp32": common.paired_ratio(samples, "ort-fp32", "tvm-fp32"),
                    "bit_macs": bit_macs,
                    "bit_macs_per_s": bit_macs / (bs_ms * 1e-3),
                    "roofline_fraction": bit_macs / (bs_ms * 1e-3) / peak if peak else None,
                    "worst_ci_rel": max(stats[n]["ci_rel"] for n in involved),
                    "rounds": entry["rounds"], "stable": entry["stable"],
                    "rel_error_vs_ort": max(info["bit-serial"]["rel_error_vs_ort"], info["auto"]["rel_error_vs_ort"]),
                })
    return rows


def markdown(data: dict) -> str:
    lines = [f"# Single-layer benchmark (batch {data['settings']['batch']})\n", common.machine_markdown(data["machine"])]
    peaks = data["roofline"]
    lines.append(f"Popcount roofline ({peaks['source']}): " + ", ".join(
        f"{t} thread(s) {p['per_s'] / 1e9:.1f} G bit-MAC/s ({p['path']})" for t, p in peaks["per_thread"].items()) + ".\n")
    for t in sorted({r["threads"] for r in data["rows"]}):
        rows = [r for r in data["rows"] if r["threads"] == t]
        lines.append(f"\n## {t} thread(s)\n")
        table = []
        for r in rows:
            auto = "= bit-serial" if r["auto_strategy"] == "bit-serial" else f"{r['auto_strategy']} {common.fmt_ms(r['auto_ms']['median'])}"
            table.append([r["description"], f"{r['macs'] / 1e6:.1f}", r["scheme"], f"{r['M']}x{r['N']}={r['plane_pairs']}",
                          common.fmt_ms(r["bit_serial_ms"]["median"]), _run_column(r), auto,
                          common.fmt_ms(r["ort_fp32_ms"]["median"]), common.fmt_ms(r["ort_int8_ms"]["median"]),
                          common.fmt_ms(r["tvm_fp32_ms"]["median"]),
                          common.fmt_x(r["speedup_bit_serial_vs_ort_fp32"]["median"]),
                          common.fmt_x(r["speedup_bit_serial_vs_ort_int8"]["median"]),
                          common.fmt_x(r["speedup_auto_vs_ort_fp32"]["median"]),
                          common.fmt_pct(r["roofline_fraction"]),
                          f"+-{100 * r['worst_ci_rel']:.1f}%{'' if r['stable'] else ' !'} ({r['rounds']})"])
        lines.append(common.markdown_table(
            ["layer", "M MACs", "scheme", "planes", "bit-serial ms", "run() ms (+us, vs ORT)", "auto ms", "ORT fp32 ms", "ORT int8 ms",
             "patvm fp32 ms", "bit-serial vs ORT", "bit-serial vs ORT int8", "auto vs ORT", "roofline",
             "spread (rounds)"], table))
    lines.append(
        "\nLatencies are medians of samples taken round-robin with every other executor of the same layer; speed-ups "
        "are medians of per-round paired ratios (ORT fp32 / patvm; > 1 = patvm faster). `planes` = weight planes x "
        "activation planes from patvm's report; roofline = planes x MACs / bit-serial time / popcount peak. "
        "`bit-serial ms` is the Relax VM's call (TVM's time_evaluator); `run()` is `CompiledModel.run(x)` on the "
        "same build with a fresh numpy input (checked and copied in), with what it adds in us and its speed-up "
        "over onnxruntime fp32. "
        "`auto`: patvm's default strategy (`= bit-serial` where it picks the bit-serial kernel). spread = the "
        "worst relative half-width of a ~95% interval of the medians of the row ('!' = not within the target "
        "before --max-seconds ran out).\n")
    return "\n".join(lines)


def _run_column(r: dict) -> str:
    if not r.get("run_ms"):
        return "-"     # a results file from before run() was timed
    return (f"{common.fmt_ms(r['run_ms']['median'])} (+{r['run_overhead_us']:.0f}, "
            f"{common.fmt_x(r['speedup_run_vs_ort_fp32']['median'])})")


def plot(data: dict, path: Path) -> None:
    plt = common.pyplot()
    threads = sorted({r["threads"] for r in data["rows"]})
    fig, axes = plt.subplots(len(threads), 2, figsize=(15, 4.2 * len(threads)), squeeze=False)
    for row_axes, t in zip(axes, threads):
        rows = [r for r in data["rows"] if r["threads"] == t]
        layers = list(dict.fromkeys(r["layer"] for r in rows))
        schemes = list(dict.fromkeys(r["scheme"] for r in rows))
        series = [("ORT fp32", lambda r: r["ort_fp32_ms"]["median"]), ("TVM fp32", lambda r: r["tvm_fp32_ms"]["median"])]
        series += [(f"bit-serial {s}", (lambda s: lambda r: r["bit_serial_ms"]["median"] if r["scheme"] == s else None)(s))  # noqa: B023 - s is bound by the outer lambda
                   for s in schemes]
        ax = row_axes[0]
        width = 0.85 / len(series)
        for i, (label, get) in enumerate(series):
            vals = []
            for lay in layers:
                cand = [get(r) for r in rows if r["layer"] == lay]
                cand = [v for v in cand if v is not None]
                vals.append(cand[0] if cand else np.nan)
            ax.bar(np.arange(len(layers)) + i * width, vals, width, label=label,
                   color=("black" if i == 0 else "grey" if i == 1 else None))
        ax.set_xticks(np.arange(len(layers)) + 0.85 / 2 - width / 2)
        ax.set_xticklabels([describe(k) for k in layers], rotation=20, fontsize=8, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency, ms (median)")
        ax.set_title(f"{t} thread(s): latency per layer")
        ax.legend(fontsize=7, ncol=2)
        ax = row_axes[1]
        width = 0.85 / max(1, len(schemes))
        for i, s in enumerate(schemes):
            vals = [next((100 * (r["roofline_fraction"] or np.nan) for r in rows if r["layer"] == lay and r["scheme"] == s), np.nan)
                    for lay in layers]
            ax.bar(np.arange(len(layers)) + i * width, vals, width, label=s)
        ax.set_xticks(np.arange(len(layers)) + 0.85 / 2 - width / 2)
        ax.set_xticklabels([describe(k) for k in layers], rotation=20, fontsize=8, ha="right")
        ax.set_ylabel("% of popcount roofline")
        ax.set_title(f"{t} thread(s): bit-serial kernel vs the popcount peak")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{data['machine']['cpu']}: ResNet18 layers, batch {data['settings']['batch']}")
    fig.tight_layout()
    common.save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_timing_args(parser)
    parser.add_argument("--layers", nargs="+", default=None,
                        help="layer keys or groups: 3x3, 1x1s2, 3x3-64x56, ... (default all)")
    parser.add_argument("--schemes", nargs="+", default=None, choices=list(SCHEMES),
                        help="default: all (quick: pa2x1 abc1x1)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--roofline", type=Path, default=None, help="roofline.json (default <out>/roofline.json)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help=f"only rewrite {NAME}.md and {NAME}.png in --out from this {NAME}.json (no measuring)")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        return common.rewrite_outputs(args.from_json, args.out, NAME, markdown, plot)
    args.layer_keys = select_layers(args.layers, args.quick)
    args.scheme_names = args.schemes or (QUICK_SCHEMES if args.quick else list(SCHEMES))

    if args.worker is not None:
        common.write_json(args.part, worker(args))
        return 0

    machine = common.machine_description()
    import roofline
    peaks = roofline.popcount_peaks(args.threads, args.roofline or args.out / "roofline.json", args.quick, NAME)
    extra = ["--layers", *args.layer_keys, "--schemes", *args.scheme_names, "--batch", str(args.batch),
             "--seed", str(args.seed)]
    raw = common.run_workers(Path(__file__).resolve(), args.threads, common.worker_passthrough(args, extra), NAME)
    machine["load_average_at_end"] = list(os.getloadavg())
    data = {"machine": machine,
            "settings": {**common.timing_settings(args), "batch": args.batch, "seed": args.seed,
                         "layers": args.layer_keys, "schemes": args.scheme_names, "threads": args.threads},
            "roofline": peaks, "raw": {str(t): v for t, v in raw.items()}}
    data["rows"] = derive(raw, peaks, args.batch)
    common.write_outputs(args.out, NAME, data, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
