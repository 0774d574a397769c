"""This CPU's arithmetic peaks: AND+popcount bit-MACs/s and fp32 FMA MACs/s (int8 VNNI where it has it).

The register-blocked micro-kernels of patvm/peaks.c are built with the C compiler (`cc -O3 -march=native
-fopenmp`, one -DHAVE_<PATH> per path /proc/cpuinfo says the CPU has) and each is run for a fraction of a
second. benchmarks/roofline.py measures them at length; the compiler's cost model
(patvm.compiler.cost_model) asks `host_peaks()` once per CPU: about a second, cached in the user's cache
folder ($XDG_CACHE_HOME/patvm or ~/.cache/patvm) under a key of the CPU model, its flags and the kernels'
source, so a new CPU or a changed kernel is measured afresh.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from patvm.files import atomic_write_bytes
from patvm.host import cpuinfo

SOURCE = Path(__file__).resolve().parent / "peaks.c"

# path -> (the /proc/cpuinfo flags it needs, the -D macros it compiles with, kind, unit)
PATHS = {
    "popcnt-scalar": ((), (), "popcount", "bit-MAC/s"),
    "popcnt-avx2-lut": (("avx2",), ("HAVE_AVX2",), "popcount", "bit-MAC/s"),
    "popcnt-avx512": (("avx512f", "avx512_vpopcntdq"), ("HAVE_AVX512_VPOPCNTDQ",), "popcount", "bit-MAC/s"),
    "fp32-fma-avx2": (("avx2", "fma"), ("HAVE_AVX2",), "fp32", "MAC/s"),
    "fp32-fma-avx512": (("avx512f",), ("HAVE_AVX512F",), "fp32", "MAC/s"),
    "int8-vnni-avx512": (("avx512f", "avx512_vnni"), ("HAVE_AVX512_VNNI",), "int8", "MAC/s"),
    "int8-vnni-avx": (("avx_vnni",), ("HAVE_AVX_VNNI",), "int8", "MAC/s"),
}
X86_ONLY = {p for p in PATHS if p != "popcnt-scalar"}


class PeaksUnavailable(RuntimeError):
    """No C compiler, or a kernel that would not build or run."""


@dataclass(frozen=True)
class Peaks:
    """One thread's ceilings, and where the figures come from."""

    popcount: float          # AND+popcount bit-MACs/s (the fastest popcount path)
    fma: float               # fp32 MACs/s
    origin: str

    def to_json(self) -> dict:
        return asdict(self)


def available_paths(flags: set[str] | None = None, machine: str | None = None) -> list[str]:
    flags = cpuinfo()["flags"] if flags is None else flags
    x86 = (machine or platform.machine()) == "x86_64"
    return [p for p, (need, _, _, _) in PATHS.items() if (x86 or p not in X86_ONLY) and all(f in flags for f in need)]


def build(paths: list[str], folder: Path) -> Path:
    """The micro-kernels of `paths` as one executable in `folder`."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise PeaksUnavailable("no C compiler (cc or gcc) to build the peak micro-kernels")
    macros = sorted({m for p in paths for m in PATHS[p][1]})
    exe = folder / "peaks"
    cmd = [compiler, "-O3", "-march=native", "-fopenmp", *(f"-D{m}" for m in macros), str(SOURCE), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PeaksUnavailable(f"cannot build the peak micro-kernels: {' '.join(cmd)}: {proc.stderr.strip()[-300:]}")
    return exe


def run_once(exe: Path, path: str, threads: int, seconds: float) -> float:
    """ops/s of one kernel run of `seconds`."""
    proc = subprocess.run([str(exe), path, str(threads), str(seconds)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PeaksUnavailable(f"peak kernel {path} failed: {proc.stderr.strip()[-300:]}")
    return float(proc.stdout.split()[2])


def measure_peaks(trials: int = 3, seconds: float = 0.1) -> Peaks:
    """One thread's best popcount and fp32 paths, the best of `trials` runs each (load only lowers a run)."""
    paths = [p for p in available_paths() if PATHS[p][2] in ("popcount", "fp32")]
    with tempfile.TemporaryDirectory(prefix="patvm-peaks-") as tmp:
        exe = build(paths, Path(tmp))
        best = {p: max(run_once(exe, p, 1, seconds) for _ in range(trials)) for p in paths}
    by_kind = {kind: max((v for p, v in best.items() if PATHS[p][2] == kind), default=None)
               for kind in ("popcount", "fp32")}
    if by_kind["popcount"] is None or by_kind["fp32"] is None:
        raise PeaksUnavailable(f"no {'popcount' if by_kind['popcount'] is None else 'fp32'} kernel for this CPU "
                               f"(paths: {', '.join(paths)})")
    return Peaks(by_kind["popcount"], by_kind["fp32"], f"measured on this CPU ({cpuinfo()['model']})")


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "patvm"


def _cache_path() -> Path:
    info = cpuinfo()
    key = hashlib.sha256(json.dumps([info["model"], sorted(info["flags"]), platform.machine(),
                                     SOURCE.read_bytes().hex()]).encode()).hexdigest()[:16]
    return cache_folder() / f"peaks-{key}.json"


def host_peaks() -> Peaks:
    """This CPU's peaks, measured on first use and then read from the cache (PeaksUnavailable if they
    cannot be measured here)."""
    path = _cache_path()
    try:
        return Peaks(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass       # not measured yet (or an unreadable cache file): measure
    peaks = measure_peaks()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(peaks.to_json(), indent=1).encode())
    except OSError:
        pass       # a read-only home: measured again next time, still correct
    return peaks
