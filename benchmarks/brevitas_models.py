"""Brevitas models through the QONNX frontend: patvm vs onnxruntime fp32 on the float twin, vs onnxruntime on
the QCDQ export where Brevitas writes one (not for 1-bit quantizers), vs TVM's fp32 build of the twin.

    python benchmarks/brevitas_models.py                      # CNV W1A1, CNV W2A2 (32x32), binary ResNet (64x64), 1 thread
    python benchmarks/brevitas_models.py --threads 1 2 --max-seconds 60
    python benchmarks/brevitas_models.py --quick              # checks the script works

Models are built in the run (random weights, BatchNorm statistics from three train-mode batches; the
builders are tests/frontends/brevitas_nets.py) and exported with export_qonnx (TorchScript exporter):
  cnv-w1a1, cnv-w2a2   brevitas_examples.bnn_pynq CNV, 3x32x32 (first conv on the 8-bit input: fp32)
  resnet-bin           binary ResNet: stem conv fp32, 2 basic blocks of binary convs (per-channel scale
                       initialised from mean|W|), sign activations, a 1x1 stride-2 shortcut, TruncAvgPool2d, width 64
Executors, timed round-robin per model (one sample of each per round; speed-ups are medians of paired ratios):
  patvm       patvm.compile(QONNX file, target host), as a user gets it (shipped schedules if any)
  ort-fp32    onnxruntime on the float twin: the canonical form with every quantizer removed (weights as folded)
  ort-qcdq    onnxruntime on Brevitas' export_onnx_qcdq file (W2A2 only)
  tvm-fp32    patvm.compile(twin, strategy fp32, no tuning database): TVM's own fp32 build
Outputs: <out>/brevitas_models.json, .md, .png.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

NAME = "brevitas_models"
MODELS = ["cnv-w1a1", "cnv-w2a2", "resnet-bin"]


def float_twin(model):
    """The canonical form of a QONNX model with every PAQuantize replaced by Identity: what the network
    computes without its activation quantizers, standard ONNX that onnxruntime runs."""
    import onnx

    from patvm.frontends.qonnx import to_canonical
    from patvm.onnx_format import paquantize
    twin = to_canonical(model, fold_batchnorm=False)     # BatchNorms stay BatchNorms in the twin
    for node in twin.graph.node:
        if paquantize.is_paquantize(node):
            x = node.input[0]
            del node.input[:]
            node.input.append(x)
            node.op_type, node.domain = "Identity", ""
    used = {i for n in twin.graph.node for i in n.input}
    keep = [t for t in twin.graph.initializer if t.name in used]
    del twin.graph.initializer[:]
    twin.graph.initializer.extend(keep)
    opsets = [o for o in twin.opset_import if o.domain != paquantize.DOMAIN]
    del twin.opset_import[:]
    twin.opset_import.extend(opsets)
    onnx.checker.check_model(twin)
    return twin


def build(name: str, quick: bool, work: Path) -> dict:
    """{"qonnx": path, "qcdq": path or None, "torch": model, "shape": input shape}."""
    sys.path.insert(0, str(common.REPO / "tests" / "frontends"))
    import brevitas_nets as bn
    if name.startswith("cnv"):
        model, shape = bn.bnn_pynq(f"cnv_{name[-3]}w{name[-1]}a")
    else:
        size, width = (16, 16) if quick else (64, 64)
        model, shape = bn.resnet("mean", "sign", size=size, width=width)
    paths = {"qonnx": work / f"{name}.onnx", "qcdq": None}
    bn.export(model, shape, paths["qonnx"], "torchscript")
    if name == "cnv-w2a2":
        from brevitas.export import export_onnx_qcdq
        paths["qcdq"] = work / f"{name}-qcdq.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx_qcdq(model, bn.torch.rand(shape), export_path=str(paths["qcdq"]), dynamo=False)
    return {**paths, "torch": model, "shape": shape}


def worker(args) -> dict:
    t, tag, settings = common.start_worker(args, NAME)
    import onnx

    import patvm
    from patvm.frontends.qonnx import reference_outputs
    rows = []
    with tempfile.TemporaryDirectory(prefix="patvm-brevitas-") as tmp:
        for name in args.models:
            common.progress(f"{name}: building and exporting", tag)
            art = build(name, args.quick, Path(tmp))
            qonnx_model = onnx.load(str(art["qonnx"]))
            compiled = patvm.compile(str(art["qonnx"]), target="host")
            twin = float_twin(qonnx_model)
            tvm_fp32 = patvm.compile(twin, target="host", strategy="fp32", tuning_db=False)
            x = np.random.default_rng(1).random(art["shape"]).astype(np.float32)
            feed = {compiled.inputs[0]["name"]: x}
            check = common.rel_error(compiled.run(x)[0], reference_outputs(qonnx_model, feed)[0])
            ort_twin = common.ort_session(twin, t)
            timers = [common.tvm_timer("patvm", compiled, x), common.ort_timer("ort-fp32", ort_twin, feed),
                      common.tvm_timer("tvm-fp32", tvm_fp32, x)]
            if art["qcdq"] is not None:
                ort_qcdq = common.ort_session(art["qcdq"], t)
                timers.append(common.ort_timer("ort-qcdq", ort_qcdq, feed))
            layers = compiled.layers
            common.progress(f"{name}: {sum(la['strategy'] == 'bit-serial' for la in layers)}/{len(layers)} layers "
                            f"bit-serial, rel. error vs qonnx {check:.2g}; timing {len(timers)} executors", tag)
            run = common.interleaved(timers, tag=tag, label=name, **settings)
            rows.append({"model": name, "threads": t, "shape": list(art["shape"]), "rel_error_vs_qonnx": check,
                         "layers": len(layers), "bit_serial_layers": sum(la["strategy"] == "bit-serial" for la in layers),
                         "fp32_reasons": [la["reason"] for la in layers if la["strategy"] != "bit-serial"],
                         "compile_seconds": compiled.compile_seconds, **run})
    return {"rows": rows}


def derive(raw: dict) -> list[dict]:
    rows = []
    for part in raw.values():
        for r in part["rows"]:
            samples = r["samples"]
            stats = {k: common.summarize(v) for k, v in samples.items()}
            rows.append({**{k: v for k, v in r.items() if k != "samples"}, "ms": stats,
                         "speedup": {k: common.paired_ratio(samples, k, "patvm") for k in samples if k != "patvm"},
                         "worst_ci_rel": max(s["ci_rel"] for s in stats.values())})
    return rows


def markdown(data: dict) -> str:
    lines = ["# Brevitas models through the QONNX frontend (batch 1)\n", common.machine_markdown(data["machine"])]
    table = []
    for r in data["rows"]:
        ms, sp = r["ms"], r["speedup"]
        table.append([r["model"], "x".join(map(str, r["shape"][1:])), r["threads"],
                      f"{r['bit_serial_layers']}/{r['layers']}", common.fmt_ms(ms["patvm"]["median"]),
                      common.fmt_ms(ms["ort-fp32"]["median"]), common.fmt_x(sp["ort-fp32"]["median"]),
                      common.fmt_ms(ms["ort-qcdq"]["median"]) if "ort-qcdq" in ms else "-",
                      common.fmt_x(sp["ort-qcdq"]["median"]) if "ort-qcdq" in sp else "-",
                      common.fmt_ms(ms["tvm-fp32"]["median"]), common.fmt_x(sp["tvm-fp32"]["median"]),
                      f"{r['rel_error_vs_qonnx']:.1e}", f"+-{100 * r['worst_ci_rel']:.1f}%{'' if r['stable'] else ' !'} ({r['rounds']})"])
    lines.append(common.markdown_table(
        ["model", "input", "threads", "bit-serial layers", "patvm ms", "ORT fp32 twin ms", "vs ORT fp32",
         "ORT QCDQ ms", "vs ORT QCDQ", "TVM fp32 twin ms", "vs TVM fp32", "rel. error vs qonnx", "spread (rounds)"], table))
    lines.append("\nSpeed-ups: medians of per-round paired ratios (other / patvm; > 1 = patvm faster). The twin is "
                 "the same network with its activation quantizers removed (weights as quantized). Layers not "
                 "bit-serial: " + "; ".join(sorted({f"{r['model']}: {reason}" for r in data["rows"]
                                                    for reason in r["fp32_reasons"]})) + ".\n")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    plt = common.pyplot()
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    series = [("patvm", "patvm", "tab:green"), ("ORT fp32 twin", "ort-fp32", "tab:blue"),
              ("TVM fp32 twin", "tvm-fp32", "tab:gray")]
    flat = [{k: r["ms"][k] for k in ("patvm", "ort-fp32", "tvm-fp32")} for r in rows]
    common.latency_bars(ax, flat, series, [f"{r['model']} t={r['threads']}" for r in rows])
    ax.set_title("Brevitas models (QONNX), batch 1", fontsize=9)
    common.save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, choices=MODELS, help=f"default {' '.join(MODELS)}")
    parser.add_argument("--from-json", type=Path, default=None, help="only rewrite brevitas_models.md/.png from this json")
    common.add_timing_args(parser)
    args = parser.parse_args(argv)
    args.models = args.models or (["cnv-w2a2", "resnet-bin"] if args.quick else MODELS)
    if args.from_json:
        return common.rewrite_outputs(args.from_json, args.out, NAME, markdown, plot)
    if args.worker is not None:
        common.write_json(args.part, worker(args))
        return 0
    if args.threads == [1, 2] and not any(a.startswith("--threads") for a in (argv or sys.argv[1:])):
        args.threads = [1]
    extra = common.worker_passthrough(args, ["--models", *args.models])
    raw = common.run_workers(Path(__file__).resolve(), args.threads, extra, NAME)
    data = {"machine": common.machine_description(argv), "settings": {"models": args.models, "quick": args.quick},
            "rows": derive(raw)}
    common.write_outputs(args.out, NAME, data, markdown, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
