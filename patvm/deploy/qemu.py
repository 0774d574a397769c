"""Running an exported aarch64 module here, under qemu-user with the runner: results only, never speed."""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patvm.deploy.runner import QEMU, QEMU_SYSROOT, cached_runner, toolchain_problems
from patvm.deploy.runtime_fetch import require_runtime
from patvm.errors import PatvmError


@dataclass
class QemuRun:
    outputs: list[np.ndarray]
    stdout: str
    seconds: float


def run_on_qemu(module_path: str | os.PathLike, inputs, runtime_dir=None, runner: str | os.PathLike | None = None,
                timeout: float = 600, repeat: int = 0, threads: int | None = None) -> QemuRun:
    """Run an exported aarch64 module (.so) on `inputs` (an array or a list in input order) under
    qemu-aarch64 with the runner. Returns the outputs (correctness checks only: the timings are qemu's)."""
    problems = toolchain_problems()
    if problems:
        raise PatvmError("cannot run aarch64 code here: " + "; ".join(problems))
    runtime = require_runtime(runtime_dir)
    runner = Path(runner) if runner is not None else cached_runner(runtime)
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    with tempfile.TemporaryDirectory(prefix="patvm-qemu-") as tmp:
        paths = []
        for i, array in enumerate(arrays):
            paths.append(os.path.join(tmp, f"input{i}.npy"))
            np.save(paths[-1], np.ascontiguousarray(array))
        out = os.path.join(tmp, "output.npy")
        env_args = ["-E", f"LD_LIBRARY_PATH={runtime / 'lib'}"]
        if threads is not None:
            env_args += ["-E", f"TVM_NUM_THREADS={int(threads)}"]
        cmd = [QEMU, "-L", QEMU_SYSROOT, *env_args, str(runner), os.path.abspath(module_path), *paths, "-o", out]
        if repeat:
            cmd += ["--repeat", str(int(repeat))]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise PatvmError(f"the runner under qemu took more than {timeout:.0f} s") from exc
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise PatvmError(f"the runner under qemu failed (exit {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
        outputs, i = [], 0
        while os.path.isfile(out if i == 0 else os.path.join(tmp, f"output.{i}.npy")):
            outputs.append(np.load(out if i == 0 else os.path.join(tmp, f"output.{i}.npy")))
            i += 1
        return QemuRun(outputs, proc.stdout, seconds)
