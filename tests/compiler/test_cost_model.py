"""The strategy `auto`: the path the cost model predicts faster from the target's peaks."""
import json
import shutil

import pytest

import patvm.peaks as peaks_module
from patvm.compiler.cost_model import BIT_SERIAL, layer_macs, predict
from patvm.compiler.strategy import default_policy, preset_peaks
from patvm.compiler.workload import WorkloadKey
from patvm.targets import list_presets, resolve_target

CONV_64x56 = WorkloadKey("conv", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 3, 1)
DOWNSAMPLE = WorkloadKey("conv", (1, 64, 56, 56), (128, 64, 1, 1), 2, 0, 3, 1)


def peaks_of(preset):
    return preset_peaks(preset, list_presets()[preset])


def test_bit_serial_time_grows_with_the_plane_pairs_and_fp32_does_not():
    peaks = peaks_of("x86-znver3")
    one, four = predict(CONV_64x56, 1, peaks), predict(CONV_64x56, 4, peaks)
    assert four.bit_serial_s == pytest.approx(4 * one.bit_serial_s)
    assert four.fp32_s == one.fp32_s


def test_short_reductions_are_less_efficient():
    """A 1x1 conv over 64 channels (one word per output) reaches a smaller fraction of the peak than a 3x3."""
    assert BIT_SERIAL(1) < 0.5 * BIT_SERIAL(9)
    peaks = peaks_of("x86-znver3")
    per_mac = [predict(k, 2, peaks).bit_serial_s / layer_macs(k)[0] for k in (DOWNSAMPLE, CONV_64x56)]
    assert per_mac[0] > per_mac[1]


@pytest.mark.parametrize("pairs,znver3,avx512", [(2, "bit-serial", "bit-serial"), (9, "fp32", "bit-serial"),
                                                 (16, "fp32", "bit-serial"), (20, "fp32", "fp32")])
def test_the_choice_follows_the_machine(pairs, znver3, avx512):
    """AVX-512 VPOPCNTDQ has 3.4x the popcount throughput of AVX2's table lookup for 1.4x the FMA: the
    crossover (fp32 only where predicted 1.25x faster) moves from between 4 and 9 plane pairs to between 16
    and 20."""
    key = str(CONV_64x56)
    for preset, want in (("x86-znver3", znver3), ("x86-avx512", avx512)):
        strategy, reason = default_policy(resolve_target(preset)).choose(key, pairs)
        assert strategy == want, (preset, reason)
        assert "predicted bit-serial" in reason and "ms, fp32" in reason


def test_measured_choices_and_forced_modes_win_over_the_prediction():
    key = str(CONV_64x56)
    measured = {key: {"strategy": "bit-serial", "note": "0.9 ms vs 1.1 ms"}}
    assert default_policy(resolve_target("x86-znver3"), measured=measured).choose(key, 20)[0] == "bit-serial"
    assert default_policy(resolve_target("x86-znver3"), "fp32").choose(key, 1)[0] == "fp32"


def test_cuda_keeps_its_fixed_rule_and_custom_targets_borrow_a_preset():
    cuda = default_policy(resolve_target("cuda-sm80"))
    assert cuda.peaks is None and cuda.choose(str(CONV_64x56), 64)[0] == "bit-serial"
    assert cuda.choose(str(CONV_64x56), 65)[0] == "fp32"
    custom = default_policy(resolve_target({"kind": "llvm", "mcpu": "znver3"}))
    assert custom.peaks == peaks_of("x86-avx2")


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_host_peaks_are_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = peaks_module.host_peaks()
    assert first.popcount > first.fma > 1e8 and "measured on this CPU" in first.origin
    (cached,) = (tmp_path / "patvm").glob("peaks-*.json")
    assert json.loads(cached.read_text())["popcount"] == first.popcount

    def fail():
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(peaks_module, "measure_peaks", fail)
    assert peaks_module.host_peaks() == first
    assert default_policy(resolve_target("host")).peaks == first
