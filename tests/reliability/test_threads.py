"""One compiled module used from 8 threads at once: every result equals the serial one.

CompiledModel keeps one Relax VM per thread (a VM is not thread-safe); the module and its packed
weights are shared. 8 threads x 50 inferences, each on its own input.
"""
import threading

import numpy as np
import pytest

import patvm
from patvm.approx import Staircase
from patvm.onnx_format import GraphWriter
from patvm.testing import onnxruntime_outputs

F32 = np.float32
THREADS = 8
RUNS = 50
SHAPE = (2, 7, 6, 6)


def threaded_model():
    """PAQuantize -> bit-serial conv (ABC offset, padded) + residual -> quantizer -> Flatten... -> bit-serial Gemm."""
    rng = np.random.default_rng(0)
    g = GraphWriter("threads")
    x = g.input("x", list(SHAPE))
    q = g.pa_quantize(x, Staircase(np.array([-0.5, 0.0, 0.5], F32), np.array([-0.75, -0.25, 0.25, 0.75], F32)))
    y = g.conv(q, rng.choice(np.array([-0.5, 0.5], F32), size=(7, 7, 3, 3)), rng.integers(-4, 4, 7) / 8, pad=1)
    y = g.relu(g.add(y, x))
    flat = g.flatten(g.maxpool(y, 2, 2))
    q2 = g.pa_quantize(flat, Staircase(np.array([0.5, 1.0, 2.0], F32), np.array([0, 0.5, 1.0, 2.0], F32)))
    w = rng.choice(np.array([-0.75, -0.25, 0, 0.5, 1.0], F32), size=(10, 7 * 3 * 3))
    g.output(g.gemm(q2, w, np.arange(10, dtype=F32) / 8))
    return g.model()


def image(i: int) -> np.ndarray:
    return (np.random.default_rng(1000 + i).integers(-24, 25, size=SHAPE) / 8).astype(F32)


@pytest.fixture(scope="module")
def model_and_module(tmp_path_factory):
    model = threaded_model()
    compiled = patvm.compile(model, target="host", strategy="bit-serial")
    assert [la["strategy"] for la in compiled.layers] == ["bit-serial", "bit-serial"], compiled.report()
    path = tmp_path_factory.mktemp("threads") / "threads.so"
    compiled.export(path)
    return model, compiled, str(path)


def hammer(compiled) -> tuple[dict, dict, list]:
    """THREADS threads start together and each runs RUNS inferences on its own inputs."""
    results, vms, errors = {}, {}, []
    barrier = threading.Barrier(THREADS)

    def worker(t: int):
        try:
            barrier.wait(timeout=60)
            for r in range(RUNS):
                i = t * RUNS + r
                results[i] = compiled.run(image(i))[0]
            vms[t] = id(compiled._vm())          # this thread's VM
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    return results, vms, errors


def check_against_serial(compiled, model=None):
    serial = {i: compiled.run(image(i))[0] for i in range(THREADS * RUNS)}
    results, vms, errors = hammer(compiled)
    assert not errors, errors
    assert sorted(results) == list(range(THREADS * RUNS))
    for i in range(THREADS * RUNS):
        assert np.array_equal(results[i], serial[i]), f"inference {i} differs from the serial run"
    assert len(set(vms.values())) == THREADS, "each thread must have its own VM"
    assert len({results[i].tobytes() for i in range(THREADS * RUNS)}) > THREADS * RUNS // 2, "inputs should differ"
    if model is not None:    # and the serial results are right
        for i in (0, 1, THREADS * RUNS - 1):
            assert np.array_equal(serial[i], onnxruntime_outputs(model, {"x": image(i)})[0])


def test_compiled_module_from_8_threads(model_and_module):
    model, compiled, _ = model_and_module
    check_against_serial(compiled, model)


def test_exported_module_from_8_threads(model_and_module):
    """The shared library loaded back (the deployment path) behaves the same."""
    _, compiled, path = model_and_module
    loaded = patvm.load(path)
    check_against_serial(loaded)
    first = image(0)
    assert np.array_equal(loaded.run(first)[0], compiled.run(first)[0])
