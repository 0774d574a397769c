"""Smoke runs of the benchmark scripts (`pytest -m bench`): each runs with --quick on tiny shapes into a
temporary folder and writes its json / md / png. Nothing here checks a speed: the machine may be busy."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.bench


def run_script(name: str, out: Path, *extra: str, timeout: int = 900) -> None:
    cmd = [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def check_outputs(out: Path, name: str) -> dict:
    paths = {ext: out / f"{name}.{ext}" for ext in ("json", "md", "png")}
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0, f"{path} missing"
    data = json.loads(paths["json"].read_text())
    machine = data["machine"]
    for key in ("cpu", "features", "cores", "versions", "date", "command"):
        assert key in machine, key
    text = paths["md"].read_text()
    assert text.startswith("# ") and "|---|" in text
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    return data


def test_roofline_quick(tmp_path):
    run_script("roofline", tmp_path, "--threads", "1")
    data = check_outputs(tmp_path, "roofline")
    entry = data["threads"]["1"]
    assert "popcnt-scalar" in entry["paths"]
    assert entry["popcount"]["path"] in data["paths"] and entry["popcount"]["per_s"] > 0
    assert entry["fp32"] is None or entry["fp32"]["per_s"] > 0


def test_layers_quick(tmp_path):
    run_script("layers", tmp_path, "--threads", "1", "--layers", "3x3-16x8", "--schemes", "pa2x1", "abc1x1")
    data = check_outputs(tmp_path, "layers")
    rows = data["rows"]
    assert {r["scheme"] for r in rows} == {"pa2x1", "abc1x1"}
    for r in rows:
        assert r["threads"] == 1 and r["layer"] == "3x3-16x8"
        assert r["plane_pairs"] >= 1 and r["bit_serial_ms"]["median"] > 0 and r["ort_fp32_ms"]["median"] > 0
        assert r["roofline_fraction"] is not None and r["roofline_fraction"] > 0
        assert r["rel_error_vs_ort"] < 1e-3            # the timed kernels compute the layer
    # the markdown / plot can be rewritten from the JSON alone
    again = tmp_path / "again"
    subprocess.run([sys.executable, str(BENCH / "layers.py"), "--from-json", str(tmp_path / "layers.json"),
                    "--out", str(again)], check=True, capture_output=True, cwd=REPO)
    assert (again / "layers.md").read_text() == (tmp_path / "layers.md").read_text()


def test_models_quick(tmp_path):
    run_script("models", tmp_path, "--threads", "1", "--work-dir", str(tmp_path / "work"))
    data = check_outputs(tmp_path, "models")
    (row,) = data["rows"]
    assert row["variant"] == "pa-resnet18-2x1" and row["batch"] == 1
    assert row["patvm_ms"]["median"] > 0 and row["ort_fp32_ms"]["median"] > 0
    assert row["rel_error_vs_ort_pa"] < 1e-2       # a deep net may flip a rare quantizer decision
    (size,) = data["sizes"]
    assert size["patvm_so_bytes"] > 0 and size["fp32_onnx_bytes"] > 0 and size["patvm_compile_seconds"] > 0


def test_tuned_quick(tmp_path):
    """tuned.py: tunes the pooling kernels of a 32x32 pa-resnet18 (2,1) and its twin (1 trial), then times
    the untuned and tuned builds; every tuned build says how many kernels found a record."""
    run_script("tuned", tmp_path, "--threads", "1", "--work-dir", str(tmp_path / "work"))
    data = check_outputs(tmp_path, "tuned")
    (row,) = data["rows"]
    assert row["variant"] == "pa-resnet18-2x1" and row["threads"] == 1
    for key in ("untuned_ms", "tuned_ms", "ort_fp32_ms", "tvm_fp32_ms", "tvm_fp32_tuned_ms"):
        assert row[key]["median"] > 0, key
    assert max(row["rel_error"].values()) < 1e-2
    tuned, kernels = map(int, row["tuned_kernels"].split("/"))
    assert tuned >= 1 and kernels > tuned                  # the pooling kernel, not the others (--only pool)
    assert set(data["tune_reports"]) == {"pa-resnet18-2x1", "resnet18 (twin)"}
    searched = [t["name"] for report in data["tune_reports"].values() for t in report["tasks"] if t["trials"]]
    assert searched and all("pool" in name for name in searched)


def test_compare_two_modules(tmp_path):
    """compare.py on the same tiny layer compiled twice: identical outputs, a ratio printed."""
    import numpy as np

    import patvm
    from patvm.onnx_format import GraphWriter
    g = GraphWriter("tiny")
    g.output(g.conv(g.input("x", [1, 8, 6, 6]), np.ones((4, 8, 3, 3), np.float32), pad=1), [1, 4, 6, 6])
    paths = [tmp_path / "a.so", tmp_path / "b.so"]
    for path in paths:
        patvm.compile(g.model(), target="host").export(path)
    cmd = [sys.executable, str(BENCH / "compare.py"), *map(str, paths), "--sample-ms", "2", "--max-seconds", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "outputs identical: True" in proc.stdout and "A/B " in proc.stdout, proc.stdout


def test_brevitas_models_quick(tmp_path):
    """brevitas_models.py: a Brevitas CNV W2A2 and a binary ResNet through the QONNX frontend."""
    pytest.importorskip("brevitas", reason="needs brevitas, qonnx and onnxoptimizer")
    run_script("brevitas_models", tmp_path, "--threads", "1")
    data = check_outputs(tmp_path, "brevitas_models")
    assert [r["model"] for r in data["rows"]] == ["cnv-w2a2", "resnet-bin"]
    for r in data["rows"]:
        assert r["ms"]["patvm"]["median"] > 0 and r["ms"]["ort-fp32"]["median"] > 0
        assert r["rel_error_vs_qonnx"] < 1e-3 and r["bit_serial_layers"] == r["layers"] - 1
    assert "ort-qcdq" in data["rows"][0]["ms"]


def test_neon_static_quick(tmp_path):
    """The static aarch64 report: needs the cross toolchain and llvm-mca, writes json + md (no plot)."""
    import shutil
    if not all(shutil.which(tool) for tool in ("aarch64-linux-gnu-g++", "aarch64-linux-gnu-objdump", "llvm-mca")):
        pytest.skip("needs aarch64-linux-gnu-g++/objdump and llvm-mca")
    run_script("neon_static", tmp_path, "--presets", "arm-a72")
    data = json.loads((tmp_path / "neon_static.json").read_text())
    assert (tmp_path / "neon_static.md").read_text().startswith("# ")
    ref = data["references"]["cortex-a72"]
    assert ref["lce_shape"]["cnt"] == 16 and ref["fmla_8x8"]["macs_per_cycle"] > 0
    rows = {(r["layer"], r["schedule"]): r for r in data["rows"]}
    neon, generic = rows[("3x3-16x8", "neon")], rows[("3x3-16x8", "generic")]
    assert neon["mnemonics"].get("addp", 0) > 0 and "addp" not in generic["mnemonics"]
    assert neon["per_cnt"] < generic["per_cnt"] and neon["mca"]["cycles_per_512_bit_macs"] > 0
