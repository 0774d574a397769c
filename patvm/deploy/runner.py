"""The C++ runner (deploy/runner.cc: module + .npy in, .npy out), cross-compiled against the aarch64
runtime, and the toolchain it needs."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from patvm.data import data_dir
from patvm.deploy.runtime_fetch import MANIFEST, require_runtime
from patvm.errors import PatvmError

CROSS_CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
QEMU_SYSROOT = "/usr/aarch64-linux-gnu"
RUNNER_SOURCE = data_dir("deploy") / "runner.cc"
CXXFLAGS = ("-std=c++17", "-O2")
LDFLAGS = ("-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed", "-Wl,-rpath,$ORIGIN/lib",
           "-Wl,-rpath,$ORIGIN/../lib", "-ldl", "-lpthread")



def toolchain_problems(need_qemu: bool = True) -> list[str]:
    """What is missing to cross-build (and, with need_qemu, to run) aarch64 code here; [] when all is there."""
    problems = []
    if shutil.which(CROSS_CXX) is None:
        problems.append(f"{CROSS_CXX} not found (Debian: g++-aarch64-linux-gnu; scripts/install-system-deps.sh)")
    if need_qemu:
        if shutil.which(QEMU) is None:
            problems.append(f"{QEMU} not found (Debian: qemu-user; scripts/install-system-deps.sh)")
        if not Path(QEMU_SYSROOT, "lib", "ld-linux-aarch64.so.1").exists():
            problems.append(f"no aarch64 sysroot at {QEMU_SYSROOT} (Debian: libc6-arm64-cross)")
    return problems


def _runner_digest(runtime: Path, cxx: str) -> str:
    h = hashlib.sha256(RUNNER_SOURCE.read_bytes())
    h.update((runtime / MANIFEST).read_bytes())
    h.update(" ".join((cxx,) + CXXFLAGS + LDFLAGS).encode())
    return h.hexdigest()[:12]


def build_runner(output: str | os.PathLike, runtime_dir=None, cxx: str = CROSS_CXX,
                 source: str | os.PathLike | None = None) -> Path:
    """Compile runner.cc with `cxx` against the fetched runtime (headers + libraries)."""
    runtime = require_runtime(runtime_dir)
    if shutil.which(cxx) is None:
        raise PatvmError(f"{cxx} not found: install the aarch64 cross compiler (scripts/install-system-deps.sh)")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".runner-", dir=output.parent)
    os.close(fd)
    cmd = [cxx, *CXXFLAGS, f"-I{runtime / 'include'}", str(source or RUNNER_SOURCE), "-o", tmp,
           f"-L{runtime / 'lib'}", *LDFLAGS]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PatvmError(f"building the runner failed ({' '.join(cmd)}):\n{proc.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output


def cached_runner(runtime_dir=None, cxx: str = CROSS_CXX) -> Path:
    """The runner built against the fetched runtime, kept in <runtime>/bin (rebuilt when runner.cc changes)."""
    runtime = require_runtime(runtime_dir)
    path = runtime / "bin" / f"runner-{_runner_digest(runtime, cxx)}"
    if not path.is_file():
        build_runner(path, runtime, cxx)
    return path
