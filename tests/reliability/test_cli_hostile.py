"""`patvm compile` on hostile files: exit code 2, one stderr line "patvm: error: ...", no traceback, no
crash (no negative return code), no output file.

The loader-level refusals are tested one by one in tests/onnx_format/test_validate.py; this proves the
command-line path ends the same way (each case is one `python -m patvm.cli` process, ~4 s of CPU).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from patvm.approx import Staircase
from patvm.onnx_format import GraphWriter

# the protobuf-recursion bomb of the loader tests, built by one function
_spec = importlib.util.spec_from_file_location(
    "_patvm_validate_tests", Path(__file__).resolve().parents[1] / "onnx_format" / "test_validate.py")
_validate_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_validate_tests)

F32 = np.float32
ROOT = Path(__file__).resolve().parents[2]


def good_model() -> onnx.ModelProto:
    g = GraphWriter("hostile")
    x = g.input("x", [1, 3, 4, 4])
    q = g.pa_quantize(x, Staircase(np.array([0.0, 1.0], F32), np.array([0.0, 0.5, 2.0], F32)))
    g.output(g.conv(q, np.arange(2 * 3 * 9, dtype=F32).reshape(2, 3, 3, 3) % 4 / 4, pad=1), [1, 2, 4, 4])
    return g.model()


def external_model(folder: Path, location: str) -> Path:
    """good_model with the conv weight stored externally at `location` (rewritten after saving)."""
    model = good_model()
    path = folder / "model.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    saved = onnx.load(path, load_external_data=False)
    for tensor in saved.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    path.write_bytes(saved.SerializeToString())
    return path


def with_opset(domain: str, version: int) -> bytes:
    model = good_model()
    for op in model.opset_import:
        if op.domain == domain:
            op.version = version
    return model.SerializeToString()


def cycle() -> bytes:
    relu = lambda i, o: helper.make_node("Relu", [i], [o], name=f"relu_{o}")  # noqa: E731
    graph = helper.make_graph([relu("b", "a"), relu("a", "b"), relu("b", "y")], "cycle",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def conv_weight(model: onnx.ModelProto) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name.startswith("conv_w"))


def huge_initializer() -> bytes:
    model = good_model()
    w = conv_weight(model)
    del w.dims[:]
    w.dims.extend([2**40, 2**40, 3, 3])
    return model.SerializeToString()


def huge_input() -> bytes:
    model = good_model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = 2**40
    dims[3].dim_value = 2**40
    return model.SerializeToString()


def raw_data(delta: int) -> bytes:
    model = good_model()
    w = conv_weight(model)
    data = numpy_helper.to_array(w).tobytes()
    w.raw_data = data[:delta] if delta < 0 else data + b"\0" * delta
    return model.SerializeToString()


def setup_case(name: str, folder: Path) -> tuple[Path, str]:
    """Write the hostile input for `name` under `folder`; returns (model path, a word the error names)."""
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    data = None
    if name == "truncated":
        data = good_model().SerializeToString()[:200]
        word = "not an ONNX protobuf"
    elif name == "random-bytes":
        data = np.random.default_rng(1).bytes(4096)
        word = "not an ONNX protobuf"
    elif name == "text-file":
        data = b"ir_version: 8\ngraph { node { op_type: 'Relu' } }\n"
        word = "not an ONNX protobuf"
    elif name == "empty-file":
        data = b""
        word = "empty"
    elif name == "missing-file":
        word = "no such file"
    elif name == "directory":
        path.mkdir()
        word = "is a directory"
    elif name == "opset-too-old":
        data, word = with_opset("", 7), "opset"
    elif name == "opset-from-the-future":
        data, word = with_opset("", 99), "opset"
    elif name == "patvm-opset-2":
        data, word = with_opset("ai.patvm", 2), "ai.patvm"
    elif name == "cycle":
        data, word = cycle(), "cycle"
    elif name == "deeply-nested":
        data, word = _validate_tests.deeply_nested_graph_bytes(300), "not an ONNX protobuf"
    elif name == "external-dotdot":
        (folder.parent / f"{name}-secret.bin").write_bytes(b"TOP-SECRET" * 1000)
        path, word = external_model(folder, f"../{name}-secret.bin"), "escaping the model's folder"
    elif name == "external-absolute":
        path, word = external_model(folder, str(folder / "weights.bin")), "absolute external data"
    elif name == "external-symlink":
        (folder.parent / f"{name}-secret.bin").write_bytes(b"TOP-SECRET" * 1000)
        path = external_model(folder, "link.bin")
        os.symlink(folder.parent / f"{name}-secret.bin", folder / "link.bin")
        word = "escaping the model's folder"
    elif name == "huge-initializer":
        data, word = huge_initializer(), "over the limit"
    elif name == "huge-input":
        data, word = huge_input(), "graph input 'x' declares"
    elif name == "raw-data-short":
        data, word = raw_data(-8), "raw data"
    elif name == "raw-data-long":
        data, word = raw_data(16), "raw data"
    else:
        raise AssertionError(name)
    if data is not None:
        path.write_bytes(data)
    return path, word


# the list runs by default; the rest of the loader's list (one more process each) with -m slow
CASES = ["truncated", "random-bytes", "opset-too-old", "patvm-opset-2", "cycle", "external-dotdot",
         "huge-initializer", "huge-input", "raw-data-short"]
SLOW_CASES = ["text-file", "empty-file", "missing-file", "directory", "opset-from-the-future", "deeply-nested",
              "external-absolute", "external-symlink", "raw-data-long"]


def compile_cli(path: Path, out_dir: Path) -> subprocess.CompletedProcess:
    out_dir.mkdir()
    return subprocess.run([sys.executable, "-m", "patvm.cli", "compile", str(path), "-o", str(out_dir / "out.so")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("case", CASES + [pytest.param(c, marks=pytest.mark.slow) for c in SLOW_CASES])
def test_cli_refuses_hostile_file(tmp_path, case):
    path, word = setup_case(case, tmp_path / case)
    out_dir = tmp_path / "out"
    result = compile_cli(path, out_dir)
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr[-1000:]}"
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("patvm: error: "), lines[0]
    assert "Traceback" not in result.stderr and "TOP-SECRET" not in result.stderr
    assert word in lines[0], lines[0]
    assert "wrote" not in result.stdout
    assert os.listdir(out_dir) == [], f"left behind: {os.listdir(out_dir)}"
    print(lines[0])
