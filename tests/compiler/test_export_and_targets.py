"""Exported libraries reload in a fresh process; target presets emit the instructions they promise."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import binary_layer_model, onnxruntime_run

import patvm
from patvm.runtime import module_source
from patvm.targets import host_has_feature, resolve_target


@pytest.fixture(scope="module")
def layer():
    return binary_layer_model(kind="conv", C=64, O=32, H=8, batch=1)


def test_export_reloads_in_fresh_process_with_plain_tvm(tmp_path, layer):
    model, x = layer
    compiled = patvm.compile(model, strategy="bit-serial")
    path = tmp_path / "layer.so"
    compiled.export(path)
    np.save(tmp_path / "x.npy", x)
    script = f"""
import numpy as np, tvm
from tvm import relax
vm = relax.VirtualMachine(tvm.runtime.load_module({str(path)!r}), tvm.cpu())
np.save({str(tmp_path / 'y.npy')!r}, vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r}))).numpy())
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), onnxruntime_run(model, {"x": x})[0])
    reloaded = patvm.load(path)
    np.testing.assert_array_equal(reloaded.run(x)[0], compiled.run(x)[0])
    assert json.loads((tmp_path / "layer.so.json").read_text())["layers"][0]["strategy"] == "bit-serial"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def _asm(model, target):
    return module_source(patvm.compile(model, target=target, strategy="bit-serial").module.mod)


def test_avx512_preset_emits_vpopcntq(layer):
    asm = _asm(layer[0], "x86-avx512")
    assert re.search(r"vpopcntq\s+%zmm", asm), "no vpopcntq on zmm: silent fall-back to generic code"


def test_avx2_preset_has_no_avx512_and_runs_correctly(layer):
    model, x = layer
    compiled = patvm.compile(model, target="x86-avx2", strategy="bit-serial")
    asm = module_source(compiled.module.mod)
    assert "zmm" not in asm and "vpopcnt" not in asm
    assert "vpshufb" in asm  # the nibble-table popcount on ymm
    np.testing.assert_array_equal(compiled.run(x)[0], onnxruntime_run(model, {"x": x})[0])


@pytest.mark.skipif(not host_has_feature("avx512vpopcntdq"), reason="this CPU has no AVX-512 VPOPCNTDQ")
def test_avx512_module_runs_here(layer):
    model, x = layer
    np.testing.assert_array_equal(patvm.compile(model, target="x86-avx512", strategy="bit-serial").run(x)[0],
                                  onnxruntime_run(model, {"x": x})[0])


def test_host_target_is_detected_not_native():
    spec = resolve_target("host")
    assert spec.target["mcpu"] not in ("native", "", None)
    assert spec.target["num-cores"] >= 1
    if host_has_feature("avx512vpopcntdq"):
        assert "vpopcnt" in _asm(binary_layer_model(C=64, O=16, H=4, batch=1)[0], "host")
