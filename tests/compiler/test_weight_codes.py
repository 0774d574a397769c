"""Weights of binary layers on the fp32 path stored as codes (patvm.compiler.weight_codes), expanded once
when the module is loaded: the encoding round-trips, the compiled layers stay exact, the module is small,
and a module reloaded from its file expands them too."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import binary_layer_model, onnxruntime_run

import patvm
from patvm.compiler.weight_codes import encode_weights
from patvm.runtime import load_module


@pytest.mark.parametrize("count,bits", [(2, 1), (3, 2), (4, 2), (5, 4), (16, 4), (17, 8), (256, 8)])
def test_codes_round_trip_with_the_fewest_bits(count, bits):
    from patvm.compiler.weight_codes import decode_weights
    rng = np.random.default_rng(count)
    values = np.sort(rng.standard_normal(count)).astype(np.float32)
    weight = rng.choice(values, size=(7, 5, 3, 3))
    weight.flat[:count] = values                       # every value occurs
    codes = encode_weights(weight)
    assert codes.bits == bits and codes.words.dtype == np.uint32
    assert codes.words.size == -(-weight.size * bits // 32)
    assert np.array_equal(decode_weights(codes), weight)


def test_more_than_256_values_stay_fp32():
    assert encode_weights(np.arange(257, dtype=np.float32)) is None


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_fp32_path_layer_from_codes_is_exact(kind, tmp_path):
    model, x = binary_layer_model(kind=kind, C=40, O=24, H=7, batch=2)
    compiled = patvm.compile(model, target="host", strategy="fp32", tuning_db=False)
    (layer,) = compiled.layers
    assert layer["strategy"] == "fp32" and layer["weight_kind"] == "4-bit codes", compiled.report()
    assert compiled.weight_codes and layer["packed_weight_bytes"] < layer["fp32_weight_bytes"] / 7
    want = onnxruntime_run(model, {"x": x})[0]
    np.testing.assert_array_equal(compiled.run(x)[0], want)   # dyadic values: every order of sums is exact
    path = tmp_path / "m.so"
    compiled.export(path)
    loaded = load_module(path)
    results = [None, None]

    def run(k):
        results[k] = loaded.run(x)[0]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]   # one expansion, shared
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, want) for r in results)


def test_bit_serial_layers_keep_no_codes():
    model, _ = binary_layer_model(kind="conv", C=16, O=8, H=6, batch=1)
    compiled = patvm.compile(model, target="host", strategy="bit-serial", tuning_db=False)
    assert not compiled.weight_codes and compiled.layers[0]["strategy"] == "bit-serial"


@pytest.mark.slow
def test_pa_resnet18_4x5_module_is_a_fifth_of_the_fp32_onnx(tmp_path):
    """The paper's memory saving whatever the path (Table 7): every layer of (4,5) takes the fp32 path."""
    from patvm.zoo import build_model
    model = build_model("pa-resnet18", M=4, N=5, image_size=32)
    compiled = patvm.compile(model, target="host", tuning_db=False)
    assert all(la["strategy"] == "fp32" for la in compiled.layers), compiled.report()
    compiled.export(tmp_path / "r18.so")
    size = os.path.getsize(tmp_path / "r18.so")
    assert size <= len(model.SerializeToString()) / 5, size
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = onnxruntime_run(model, {model.graph.input[0].name: x})[0]
    # a fresh process with only the file: the sidecar says the module stores codes
    code = (f"import numpy as np; from patvm.runtime import load_module; "
            f"m = load_module({str(tmp_path / 'r18.so')!r}); "
            f"np.save({str(tmp_path / 'y.npy')!r}, m.run(np.load({str(tmp_path / 'x.npy')!r}))[0])")
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
    got = np.load(tmp_path / "y.npy")
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
