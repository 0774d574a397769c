"""The staircases of QONNX's quantizers reproduce qonnx's own reference bit for bit: on rounding midpoints
(ROUND = half to even), on their float32 neighbours, at every threshold and just below it, at +-inf."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qonnx", reason="needs qonnx's reference implementation (pip install qonnx)")
from qonnx.custom_op.general.bipolar_quant import binary_quant
from qonnx.custom_op.general.intquant import int_quant
from qonnx.custom_op.general.trunc import trunc_v2

from patvm.approx.staircase import staircase_quantize
from patvm.frontends.qonnx import arithmetic as ar

F32 = np.float32
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def probes(thresholds: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Midpoints of the code grid, the thresholds, and the float32 neighbours of both, plus extremes."""
    base = np.concatenate([np.ravel(thresholds), np.ravel(steps)]).astype(F32)
    near = [base, np.nextafter(base, F32(-np.inf)), np.nextafter(base, F32(np.inf))]
    extremes = np.array([-np.inf, np.inf, -3e38, 3e38, 0.0, -0.0, 1e-45, -1e-45], F32)
    rng = np.random.default_rng(0)
    spread = float(np.max(np.abs(base))) * 1.5 + 1
    return np.concatenate(near + [extremes, rng.uniform(-spread, spread, 2000).astype(F32)])


QUANT_CASES = [
    # bits, signed, narrow, scale, zero point, rounding
    (2, True, True, 1.0, 0.0, "ROUND"),
    (2, False, False, 0.5, 0.0, "ROUND"),
    (1, True, False, 0.37, 0.0, "ROUND"),
    (3, True, False, 0.1, 0.0, "ROUND"),
    (4, False, False, 2.0 ** -3, 0.0, "ROUND"),
    (8, True, False, 2.0 ** -7, 0.0, "ROUND"),
    (2, False, False, 0.3, 1.0, "ROUND"),
    (3, True, True, 0.7, 0.0, "FLOOR"),
    (3, True, True, 0.7, 0.0, "CEIL"),
    (3, True, False, 0.25, 0.0, "HALF_UP"),
    (3, True, False, 0.25, 0.0, "HALF_DOWN"),
    (3, True, False, 0.25, 0.0, "UP"),
    (3, True, False, 0.25, 0.0, "DOWN"),
]


@pytest.mark.parametrize("bits,signed,narrow,scale,zero,rounding", QUANT_CASES)
def test_quant_staircase_equals_qonnx(bits, signed, narrow, scale, zero, rounding):
    s, z = np.array(scale, F32), np.array(zero, F32)
    op = ar.IntQuant(s, z, bits, signed, narrow, rounding)
    thr, lv = ar.staircase_of(op, 1)
    assert ar.check_staircase(op, thr, lv)
    codes = op.codes().astype(np.float64)
    mids = ((codes[:-1] + 0.5 - zero) * scale).astype(F32)
    x = probes(thr, mids)
    want = int_quant(x, s, z, np.array(bits, F32), signed, narrow, rounding)
    assert want.dtype == np.float32          # qonnx computes in float32 for float32 operands
    got = staircase_quantize(x, thr[0], lv[0])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_scale_dtypes_follow_numpy_promotion_as_qonnx_does(dtype):
    """qonnx computes in its operands' dtypes: a float64 scale makes x / scale a float64 division."""
    s, z = np.array(0.1, dtype), np.array(0.0, dtype)
    op = ar.IntQuant(s, z, 3, True, False, "ROUND")
    thr, lv = ar.staircase_of(op, 1)
    mids = ((op.codes()[:-1] + 0.5) * 0.1).astype(F32)
    x = probes(thr, mids)
    want = int_quant(x, s, z, np.array(3, F32), True, False, "ROUND").astype(F32)
    np.testing.assert_array_equal(staircase_quantize(x, thr[0], lv[0]), want)


def test_round_sends_midpoints_to_the_even_code():
    op = ar.IntQuant(np.array(1.0, F32), np.array(0.0, F32), 4, True, False, "ROUND")
    thr, lv = ar.staircase_of(op, 1)
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], F32)
    np.testing.assert_array_equal(staircase_quantize(x, thr[0], lv[0]), [0, 2, 2, 0, -2, -2])
    # code 1 starts just above 0.5 (0.5 goes to 0), code 2 exactly at 1.5 (1.5 goes to 2)
    assert thr[0][list(op.codes()).index(1) - 1] == np.nextafter(F32(0.5), F32(1))
    assert thr[0][list(op.codes()).index(2) - 1] == F32(1.5)


def test_per_channel_quant_equals_qonnx():
    scale = np.array([0.37, 1.0, 0.1, 2.0 ** -5], F32).reshape(1, 4, 1, 1)
    zero = np.array(0.0, F32)
    op = ar.IntQuant(scale.reshape(4), zero, 2, False, False, "ROUND")
    thr, lv = ar.staircase_of(op, 4)
    x = np.stack([probes(thr[c], thr[c]) for c in range(4)], 0)[None, :, :, None]      # [1, 4, P, 1]
    want = int_quant(x, scale, zero, np.array(2, F32), False, False, "ROUND")
    np.testing.assert_array_equal(staircase_quantize(x, thr, lv), want)


@pytest.mark.parametrize("scale", [1.0, 0.25, [0.5, 1.5, 3.0]])
def test_bipolar_quant_equals_qonnx(scale):
    s = np.array(scale, F32)
    channels = s.size
    op = ar.BipolarQuant(s.reshape(channels) if channels > 1 else s)
    thr, lv = ar.staircase_of(op, channels)
    x = np.tile(probes(np.array([0.0], F32), np.array([1e-30, -1e-30], F32)), (channels, 1))[None]  # [1, C, P]
    want = binary_quant(x, s.reshape(1, channels, 1) if channels > 1 else s)
    np.testing.assert_array_equal(staircase_quantize(x, thr if channels > 1 else thr[0], lv if channels > 1 else lv[0]),
                                  want)


@pytest.mark.parametrize("signed,rounding,out_bits", [(False, "ROUND", 2), (False, "FLOOR", 3), (True, "ROUND", 2)])
def test_trunc_equals_qonnx(signed, rounding, out_bits):
    s, z, out_s = np.array(0.25, F32), np.array(0.0, F32), np.array(1.0, F32)
    op = ar.Trunc(s, z, out_s, out_bits, signed, False, rounding)
    thr, lv = ar.staircase_of(op, 1)
    x = probes(thr, (np.arange(-16, 17) / 8).astype(F32))
    want = trunc_v2(x, s, z, np.array(4, F32), False, signed, out_s, np.array(out_bits, F32), rounding)
    np.testing.assert_array_equal(staircase_quantize(x, thr[0], lv[0]), want)


def test_float_keys_order():
    x = np.array([-np.inf, -3e38, -1.0, -1e-45, 0.0, 1e-45, 1.0, 3e38, np.inf], F32)
    keys = ar.float_keys(x)
    assert np.all(np.diff(keys) > 0)
    np.testing.assert_array_equal(ar.from_keys(keys), x)
    assert ar.float_keys(np.array([-0.0], F32))[0] == 0
