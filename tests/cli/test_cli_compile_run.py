"""The CLI: compile, run --verify, report; bad input is one line on stderr and exit code 2."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from patvm.onnx_format import save_model

# the dyadic layer builders of tests/compiler/conftest.py, under their own module name (a plain
# `import conftest` would pick whichever conftest.py was imported first)
_spec = importlib.util.spec_from_file_location("_patvm_cli_compiler_builders",
                                               Path(__file__).resolve().parents[1] / "compiler" / "conftest.py")
_builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_builders)
binary_layer_model = _builders.binary_layer_model


def patvm_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "patvm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("patvm: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def compiled_layer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model, x = binary_layer_model(kind="conv", C=16, O=8, H=6, batch=2)
    save_model(model, folder / "layer.onnx")
    np.save(folder / "x.npy", x)
    result = patvm_cli("compile", folder / "layer.onnx", "--target", "host", "-o", folder / "layer.so", "--report",
                       "--strategy", "bit-serial")
    assert result.returncode == 0, result.stderr
    assert "bit-serial" in result.stdout
    return folder


def test_run_with_verify_matches(compiled_layer):
    f = compiled_layer
    result = patvm_cli("run", f / "layer.so", "--input", f / "x.npy", "-o", f / "y.npy", "--verify",
                       "--onnx", f / "layer.onnx")
    assert result.returncode == 0, result.stderr
    assert "max |diff| 0 " in result.stdout and "top-1 agreement 100.0%" in result.stdout
    assert np.load(f / "y.npy").shape == (2, 8, 6, 6)


def test_run_onnx_directly(compiled_layer):
    result = patvm_cli("run", compiled_layer / "layer.onnx", "--input", compiled_layer / "x.npy", "--verify",
                       "--strategy", "bit-serial")
    assert result.returncode == 0 and "top-1 agreement 100.0%" in result.stdout


def test_wrong_input_shape_and_dtype(compiled_layer, tmp_path):
    np.save(tmp_path / "bad_shape.npy", np.zeros((1, 16, 6, 6), np.float32))
    assert_one_line_error(patvm_cli("run", compiled_layer / "layer.so", "--input", tmp_path / "bad_shape.npy"),
                          "input 'x'", "shape")
    np.save(tmp_path / "bad_dtype.npy", np.zeros((2, 16, 6, 6), np.float64))
    assert_one_line_error(patvm_cli("run", compiled_layer / "layer.so", "--input", tmp_path / "bad_dtype.npy"),
                          "input 'x'", "float32")


def _with_table(model, which, value):
    """A copy of `model` with the PAQuantize thresholds (1) or levels (2) initializer replaced."""
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    node = next(n for n in bad.graph.node if n.op_type == "PAQuantize")
    init = next(i for i in bad.graph.initializer if i.name == node.input[which])
    init.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), init.name))
    return bad, node.name


@pytest.mark.parametrize("which,value,words", [
    (1, [0.5, 0.0, 1.0, 2.0], ["strictly increasing"]),
    (2, [0.0, np.nan, 0.5, 1.0, 2.0], ["NaN"]),
    (2, [0.0, 0.5, 1.0], ["levels"]),
])
def test_bad_quantizer_tables_name_the_node(tmp_path, which, value, words):
    model, _ = binary_layer_model(kind="conv", C=4, O=2, H=4, batch=1)
    bad, node_name = _with_table(model, which, value)
    path = tmp_path / "bad.onnx"
    path.write_bytes(bad.SerializeToString())
    assert_one_line_error(patvm_cli("compile", path, "-o", tmp_path / "bad.so"), node_name, *words)
    assert not (tmp_path / "bad.so").exists()


def test_not_onnx_and_unknown_target(tmp_path, compiled_layer):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not a model")
    assert_one_line_error(patvm_cli("compile", junk, "-o", tmp_path / "j.so"), "junk.onnx")
    assert_one_line_error(patvm_cli("compile", compiled_layer / "layer.onnx", "--target", "nosuch", "-o",
                                    tmp_path / "n.so"), "unknown target")
