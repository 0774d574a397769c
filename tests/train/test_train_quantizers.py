"""Forward semantics of the training quantizers against the numpy reference (`patvm.approx`), exactly."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from patvm.approx import (
    Staircase,
    abc_activation,
    abc_activation_staircase,
    approximate_weights_abc,
    approximate_weights_pa,
    pa_activation_init,
)
from patvm.errors import PatvmError
from patvm.train import (
    ABCActivationQuantizer,
    ABCWeightQuantizer,
    PAActivationQuantizer,
    PAQuantizer,
    PAWeightQuantizer,
)


@settings(max_examples=30, deadline=None)
@given(M=st.sampled_from([2, 4, 6, 8]), seed=st.integers(0, 2**31 - 1),
       shape=st.sampled_from([(7,), (4, 3, 3, 3), (16, 8, 1, 1), (10, 5)]), scale=st.floats(1e-3, 10.0))
def test_pa_weight_forward_is_the_reference_bit_for_bit(M, seed, shape, scale):
    w = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    out = PAWeightQuantizer(M)(torch.from_numpy(w))
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), approximate_weights_pa(w, M).w_bar)


@pytest.mark.parametrize("M", [1, 2, 3, 5])
def test_abc_weight_forward_is_the_reference_bit_for_bit(M):
    w = np.random.default_rng(M).standard_normal((6, 4, 3, 3)).astype(np.float32) * 0.1
    out = ABCWeightQuantizer(M)(torch.from_numpy(w))
    np.testing.assert_array_equal(out.numpy(), approximate_weights_abc(w, M).w_bar)


def test_weight_quantizer_keeps_dtype_and_rejects_bad_M():
    w = torch.randn(3, 3, dtype=torch.float64)
    assert PAWeightQuantizer(4)(w).dtype == torch.float64
    for M in (0, 3, 5):
        with pytest.raises(PatvmError):
            PAWeightQuantizer(M)
    assert PAWeightQuantizer(4).name == "pa_weight" and ABCWeightQuantizer(2).name == "abc_weight"


def interesting_inputs(staircase: Staircase, shape, seed=0) -> np.ndarray:
    """Random values plus every threshold exactly, its float neighbours, +-inf and NaN."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 2
    t = staircase.thresholds.ravel()
    special = np.concatenate([t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), [np.inf, -np.inf, np.nan, 0.0]])
    flat = x.reshape(-1)
    flat[: special.size] = special[: flat.size]
    return x


@pytest.mark.parametrize("N", [1, 2, 5])
def test_pa_activation_forward_is_staircase_quantize_exactly(N):
    samples = np.abs(np.random.default_rng(N).standard_normal(5000))
    q = PAQuantizer(N, *pa_activation_init(samples, N))
    sc = q.staircase()
    assert sc.levels[0] == 0 and sc.N == N
    x = interesting_inputs(sc, (4, 3, 5, 5))
    y = q(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_array_equal(y, sc.quantize(x))
    # the tables the module holds are the ones it was given, up to the softplus round trip
    t, lv = pa_activation_init(samples, N)
    np.testing.assert_allclose(sc.thresholds, t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sc.levels, lv, rtol=1e-6)


def test_pa_activation_per_channel_forward():
    rng = np.random.default_rng(3)
    C, N = 6, 4
    thresholds = np.sort(rng.uniform(-1, 2, (C, N)), axis=1) + np.arange(N) * 0.01
    levels = np.concatenate([np.zeros((C, 1)), np.cumsum(rng.uniform(0.1, 1, (C, N)), axis=1)], axis=1)
    for per_channel_levels in (False, True):
        q = PAQuantizer(N, thresholds=thresholds, levels=levels, channels=C, per_channel_levels=per_channel_levels)
        sc = q.staircase()
        assert sc.per_channel and sc.thresholds.shape == (C, N) and sc.levels.shape == (C, N + 1)
        x = interesting_inputs(sc, (3, C, 4, 4))
        np.testing.assert_array_equal(q(torch.from_numpy(x)).detach().numpy(), sc.quantize(x))
        x2 = rng.standard_normal((5, C)).astype(np.float32)          # a [batch, features] input: channels on axis 1
        np.testing.assert_array_equal(q(torch.from_numpy(x2)).detach().numpy(), sc.quantize(x2))


def test_pa_thresholds_stay_strictly_increasing_under_any_step():
    q = PAQuantizer(5)
    with torch.no_grad():
        q.threshold_gaps.copy_(torch.tensor([-1e4, 30.0, -50.0, 0.0]))
        q.threshold_first.fill_(-3.0)
    v = q.thresholds().detach().numpy()
    assert np.all(np.diff(v) > 0)
    opt = torch.optim.SGD(q.parameters(), lr=1e3)
    for seed in range(5):
        opt.zero_grad()
        (q(torch.randn(256, generator=torch.Generator().manual_seed(seed))) * torch.randn(256)).sum().backward()
        opt.step()
        q.staircase()                                # validates strictly increasing thresholds
        assert np.all(np.diff(q.thresholds().detach().numpy()) > 0)


def test_pa_activation_init_from_data_matches_the_reference():
    x = torch.relu(torch.randn(8, 4, 6, 6))
    q = PAQuantizer(5)
    q.init_from_data(x)
    t, lv = pa_activation_init(x.numpy(), 5)
    np.testing.assert_allclose(q.staircase().thresholds, t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.staircase().levels, lv, rtol=1e-6)
    qc = PAQuantizer(3, channels=4)
    qc.init_from_data(x)
    for c in range(4):
        tc, _ = pa_activation_init(x[:, c].numpy(), 3)
        np.testing.assert_allclose(qc.staircase().thresholds[c], tc, rtol=1e-5, atol=1e-6)


def test_pa_activation_rejects_bad_tables():
    with pytest.raises(PatvmError, match="levels\\[0\\]"):
        PAQuantizer(2, thresholds=[0.0, 1.0], levels=[0.5, 1.0, 2.0])
    with pytest.raises(PatvmError, match="increasing"):
        PAQuantizer(2, thresholds=[1.0, 0.0], levels=[0.0, 1.0, 2.0])
    with pytest.raises(PatvmError):
        PAQuantizer(0)
    with pytest.raises(PatvmError, match="channels"):
        PAQuantizer(2, thresholds=[[0.0, 1.0]] * 3, levels=[[0.0, 1.0, 2.0]] * 3)
    assert PAQuantizer is PAActivationQuantizer and PAQuantizer(2).name == "pa_activation"


def test_abc_activation_forward_is_eq_8_9_and_its_staircase():
    shifts = np.array([0.4, -0.3, 0.1, 0.9])
    betas = np.array([0.5, 0.25, 1.0, 0.75])
    q = ABCActivationQuantizer(4, shifts=shifts, betas=betas)
    sc = q.staircase()
    t_ref, lv_ref = abc_activation_staircase(shifts, betas)
    np.testing.assert_allclose(sc.thresholds, t_ref, rtol=1e-6)
    np.testing.assert_allclose(sc.levels, lv_ref, rtol=1e-6)
    x = interesting_inputs(sc, (3, 2, 5, 5))
    y = q(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_array_equal(y, sc.quantize(x))                    # exactly the exported staircase
    # eq. 8-9 in float64 agrees away from the thresholds (at them float32 and float64 rounding differ)
    away = np.isfinite(x) & (np.min(np.abs(x[..., None] - sc.thresholds), axis=-1) > 1e-5)
    np.testing.assert_allclose(y[away], abc_activation(x, shifts, betas)[away], rtol=1e-6, atol=1e-6)
    assert sc.levels[0] == pytest.approx(-betas.sum())


def test_abc_activation_equal_shifts_merge_into_one_threshold():
    q = ABCActivationQuantizer(3, shifts=[0.2, 0.2, -0.1], betas=[0.5, 0.25, 1.0])
    sc = q.staircase()
    assert sc.N == 2
    x = np.linspace(-2, 2, 401, dtype=np.float32)
    np.testing.assert_array_equal(q(torch.from_numpy(x)).detach().numpy(), sc.quantize(x))


def test_abc_activation_init_from_data_is_the_pa_staircase_shifted():
    x = torch.relu(torch.randn(4000))
    q = ABCActivationQuantizer(4)
    q.init_from_data(x)
    t, lv = pa_activation_init(x.numpy(), 4)
    sc = q.staircase()
    np.testing.assert_allclose(sc.thresholds, t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sc.levels - sc.levels[0], lv - lv[0], rtol=1e-5, atol=1e-6)


def test_import_patvm_works_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import patvm, patvm.approx, patvm.onnx_format\n"
            "try:\n    import patvm.train\n"
            "except ImportError as e:\n    print('needs torch' if 'patvm[train]' in str(e) else e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "needs torch"
