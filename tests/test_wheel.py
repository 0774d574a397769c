"""A wheel that works: built, installed into a fresh virtual environment and used from another folder, it has
the presets (targets/), the shipped schedules (schedules/) and the deploy runner (deploy/) inside it.

The environment sees this machine's site-packages for patvm's dependencies (apache-tvm is ~100 MB), but
imports patvm from the wheel, which the test checks."""
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from patvm import zoo
from patvm.onnx_format import save_model

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, cwd, timeout=600):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, patvm) executables of a venv with the freshly built wheel; the checkout is copied first, so
    the build leaves nothing behind in it."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__",
                                                               ".pytest_cache", ".hypothesis", "_data"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist",
         source], cwd=base)
    wheel, = (base / "dist").glob("patvm-*.whl")
    venv.create(base / "env", system_site_packages=True, with_pip=False)
    python = base / "env" / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel], cwd=base)
    return python, base / "env" / "bin" / "patvm", base


def test_the_wheel_is_what_gets_imported(installed):
    python, _, base = installed
    where = run([python, "-c", "import patvm, patvm.data as d; print(patvm.__file__); print(d.data_dir('deploy'))"],
                cwd=base).split()
    assert all(str(base / "env") in path for path in where), where
    assert (Path(where[1]) / "runner.cc").is_file()


def test_presets_are_listed_from_another_folder(installed):
    _, patvm_cli, base = installed
    names = [line.split()[0] for line in run([patvm_cli, "targets"], cwd=base).splitlines()]
    assert {"host", "x86-znver3", "x86-avx512", "arm-a72", "cuda-sm90"} <= set(names)


# the preset covers what a wheel must carry (targets/, schedules/); host (a small model) only in the slow run
@pytest.mark.parametrize("target", [pytest.param("host", marks=pytest.mark.slow), "x86-znver3"])
def test_a_zoo_model_compiles_and_verifies(installed, target):
    _, patvm_cli, base = installed
    folder = base / target
    folder.mkdir()
    size = 224 if target == "x86-znver3" else 32   # the shipped records were tuned at 224x224
    save_model(zoo.build_model("pa-resnet18", M=2, N=1, image_size=size, exact=True), folder / "m.onnx")
    x = (np.random.default_rng(0).integers(-64, 65, size=(1, 3, size, size)) / 32).astype(np.float32)
    np.save(folder / "x.npy", x)
    report = run([patvm_cli, "compile", "m.onnx", "--target", target, "-o", "m.so", "--report"], cwd=folder)
    if target == "x86-znver3":   # its shipped schedules, found inside the installed package
        last = report.strip().splitlines()[-2]
        assert "(shipped for this target)" in last and str(base / "env") in last, report
        found, total = (int(w) for w in last.split()[1:4:2])
        assert found == total > 0, last
    verified = run([patvm_cli, "run", "m.so", "--input", "x.npy", "--verify", "--onnx", "m.onnx"], cwd=folder)
    assert "top-1 agreement 100.0%" in verified, verified
