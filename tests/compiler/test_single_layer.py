"""One PA / ABC-Net layer with dyadic values: the compiled output equals onnxruntime's bit for bit."""
import numpy as np
import pytest
from conftest import LAYER_CASES, binary_layer_model, onnxruntime_run

import patvm


def case_id(case):
    return "-".join(f"{k}{v}" for k, v in case.items())


@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_bit_exact_against_onnxruntime(case):
    model, x = binary_layer_model(**case)
    compiled = patvm.compile(model, target="host", strategy="bit-serial")
    assert [layer["strategy"] for layer in compiled.layers] == ["bit-serial"], compiled.report()
    got = compiled.run(x)[0]
    want = onnxruntime_run(model, {"x": x})[0]
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"


def test_abc_zero_padding_correction_matters():
    """With a non-zero bottom level, padding is 0 (not a level): the border outputs need the correction."""
    model, x = binary_layer_model(kind="conv", abc=True, C=8, O=4, H=6, relu=False, bias=False)
    compiled = patvm.compile(model, target="host", strategy="bit-serial")
    got = compiled.run(x)[0]
    want = onnxruntime_run(model, {"x": x})[0]
    assert np.array_equal(got, want)
    # the border differs from what an input padded with the bottom level would give
    assert not np.allclose(want[:, :, 0, :], want[:, :, 1, :])


def test_planes_and_packed_weight_bytes_in_report():
    model, _ = binary_layer_model(kind="conv", C=64, O=32, k=3)
    compiled = patvm.compile(model, target="host", strategy="bit-serial")
    (layer,) = compiled.layers
    assert layer["M"] == 4 and layer["N"] == 4
    # 4 planes x 9 taps x 1 word x 32 outputs x 8 bytes, plus the 4x4 float32 phi table
    assert layer["packed_weight_bytes"] == 4 * 9 * 32 * 8 + 16 * 4
    assert layer["fp32_weight_bytes"] == 32 * 64 * 9 * 4
