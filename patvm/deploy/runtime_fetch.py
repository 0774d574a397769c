"""The aarch64 TVM runtime (libtvm_runtime.so, libtvm_ffi.so, the tvm-ffi headers), taken from the aarch64
wheels of the pinned apache-tvm / apache-tvm-ffi and cached outside the repository. `fetch_runtime` is the
only thing in patvm.deploy that downloads (an explicit set-up step)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from patvm.errors import PatvmError

TVM_VERSION = "0.27.0.post1"
TVM_FFI_VERSION = "0.1.14.post1"
PLATFORM_TAGS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64",
                 "manylinux_2_17_aarch64")
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
MANIFEST = "runtime.json"

# what each wheel gives: (member prefix in the wheel, destination folder in the runtime dir)
_WHEEL_MEMBERS = {
    "apache-tvm": [("tvm/lib/libtvm_runtime.so", "lib/libtvm_runtime.so")],
    "apache-tvm-ffi": [("tvm_ffi/lib/libtvm_ffi.so", "lib/libtvm_ffi.so"),
                       ("tvm_ffi/include/tvm/ffi/", "include/tvm/ffi/"),
                       ("tvm_ffi/include/dlpack/", "include/dlpack/")],
}



def default_runtime_dir() -> Path:
    """$PATVM_AARCH64_RUNTIME, else ~/.cache/patvm/aarch64-runtime/tvm-<v>-ffi-<v> (XDG_CACHE_HOME honoured)."""
    env = os.environ.get("PATVM_AARCH64_RUNTIME")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "patvm" / "aarch64-runtime" / f"tvm-{TVM_VERSION}-ffi-{TVM_FFI_VERSION}"


def find_runtime(runtime_dir: str | os.PathLike | None = None) -> Path | None:
    """The runtime folder if it is complete (manifest, both libraries, the headers), else None."""
    root = Path(runtime_dir) if runtime_dir is not None else default_runtime_dir()
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("tvm") != TVM_VERSION or manifest.get("tvm_ffi") != TVM_FFI_VERSION:
        return None
    needed = [root / "lib" / lib for lib in RUNTIME_LIBS] + [root / "include" / "tvm" / "ffi" / "function.h",
                                                           root / "include" / "dlpack" / "dlpack.h"]
    return root if all(p.is_file() for p in needed) else None


def _pip_download(package: str, version: str, dest: Path) -> Path:
    """pip download of one aarch64 wheel (one package per command; any of PLATFORM_TAGS)."""
    platforms = [arg for tag in PLATFORM_TAGS for arg in ("--platform", tag)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--retries", "2", "--timeout", "30", *platforms, "--python-version", "3.11", f"{package}=={version}",
           "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise PatvmError(f"pip download of {package}=={version} took more than 15 minutes") from exc
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*aarch64*.whl")) if dest.is_dir() else []
    if proc.returncode != 0 or not wheels:
        last = ((proc.stderr or proc.stdout).strip().splitlines() or ["no wheel"])[-1][:300]
        raise PatvmError(f"cannot download the aarch64 wheel of {package}=={version} (pip: {last})")
    return wheels[0]


def _extract(wheel: Path, members: list[tuple[str, str]], root: Path) -> dict[str, str]:
    digests = {}
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            for prefix, target in members:
                if info.filename == prefix or (prefix.endswith("/") and info.filename.startswith(prefix)):
                    relative = target + info.filename[len(prefix):] if prefix.endswith("/") else target
                    out = (root / relative).resolve()
                    if root.resolve() not in out.parents:
                        raise PatvmError(f"{wheel.name}: unsafe member name {info.filename!r}")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    data = zf.read(info)
                    out.write_bytes(data)
                    digests[relative] = hashlib.sha256(data).hexdigest()
    return digests


def fetch_runtime(runtime_dir: str | os.PathLike | None = None, wheel_dir: str | os.PathLike | None = None,
                  force: bool = False, quiet: bool = True) -> Path:
    """Download (pip) the aarch64 apache-tvm / apache-tvm-ffi wheels of the pinned versions and extract the
    runtime libraries and the tvm-ffi headers into `runtime_dir` (default: `default_runtime_dir()`).

    `wheel_dir`: take the wheels from this folder instead of downloading (offline set-up). Returns the folder;
    does nothing if it is already complete (unless `force`). Raises PatvmError when it cannot.
    """
    root = Path(runtime_dir) if runtime_dir is not None else default_runtime_dir()
    if not force and find_runtime(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root.parent) as tmp:
        tmp = Path(tmp)
        staging = tmp / "runtime"
        staging.mkdir()
        manifest = {"tvm": TVM_VERSION, "tvm_ffi": TVM_FFI_VERSION, "wheels": {}, "files": {}}
        for package, version in (("apache-tvm", TVM_VERSION), ("apache-tvm-ffi", TVM_FFI_VERSION)):
            wheel = None
            if wheel_dir is not None:
                found = sorted(Path(wheel_dir).glob(f"{package.replace('-', '_')}-{version}-*aarch64*.whl"))
                if not found:
                    raise PatvmError(f"no aarch64 wheel of {package}=={version} in {wheel_dir}")
                wheel = found[0]
            else:
                if not quiet:
                    print(f"downloading the aarch64 wheel of {package}=={version} ...", file=sys.stderr)
                wheel = _pip_download(package, version, tmp / "wheels")
            try:
                manifest["files"].update(_extract(wheel, _WHEEL_MEMBERS[package], staging))
            except zipfile.BadZipFile as exc:
                raise PatvmError(f"{wheel.name} is not a valid wheel: {exc}") from exc
            manifest["wheels"][package] = wheel.name
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if find_runtime(staging) is None:
            raise PatvmError("the aarch64 wheels lack the runtime libraries or the tvm-ffi headers")
        old = None
        if root.exists():
            old = tmp / "old"
            os.replace(root, old)
        try:
            os.replace(staging, root)
        except OSError:
            if find_runtime(root) is None:   # another process won the race with a complete copy: keep it
                raise
    return root


def require_runtime(runtime_dir=None) -> Path:
    root = find_runtime(runtime_dir)
    if root is None:
        where = runtime_dir or default_runtime_dir()
        raise PatvmError(f"no aarch64 TVM runtime in {where}: run `patvm deploy --fetch-runtime` "
                         "(or scripts/fetch-aarch64-runtime.sh) first")
    return root
