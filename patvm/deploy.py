"""Deploy a compiled model to an aarch64 board (Raspberry Pi 4 = arm-a72, Pi 5 / RK3588 = arm-a76), or run
it here under qemu-user.

    fetch_runtime()                  the aarch64 TVM runtime: libtvm_runtime.so, libtvm_ffi.so and the tvm-ffi
                                     headers, from the aarch64 wheels of the pinned apache-tvm / apache-tvm-ffi,
                                     cached outside the repo (an explicit set-up step: it downloads)
    build_runner(path)               cross-compile deploy/runner.cc (a small C++ program: module + .npy in,
                                     .npy out) against that runtime
    deploy(model, target, out_dir)   a folder to copy to the board: module .so + sidecar, runner.cc, Makefile,
                                     README with the exact commands, the runtime libraries and headers
    run_on_qemu(module_path, x)      run an exported aarch64 module under qemu-aarch64 with the runner

Nothing here downloads anything except `fetch_runtime`. qemu runs check results, never speed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patvm.data import data_dir
from patvm.errors import PatvmError

TVM_VERSION = "0.27.0.post1"
TVM_FFI_VERSION = "0.1.14.post1"
PLATFORM_TAGS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64",
                 "manylinux_2_17_aarch64")
CROSS_CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
QEMU_SYSROOT = "/usr/aarch64-linux-gnu"
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
MANIFEST = "runtime.json"
RUNNER_SOURCE = data_dir("deploy") / "runner.cc"
CXXFLAGS = ("-std=c++17", "-O2")
LDFLAGS = ("-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed", "-Wl,-rpath,$ORIGIN/lib",
           "-Wl,-rpath,$ORIGIN/../lib", "-ldl", "-lpthread")

# what each wheel gives: (member prefix in the wheel, destination folder in the runtime dir)
_WHEEL_MEMBERS = {
    "apache-tvm": [("tvm/lib/libtvm_runtime.so", "lib/libtvm_runtime.so")],
    "apache-tvm-ffi": [("tvm_ffi/lib/libtvm_ffi.so", "lib/libtvm_ffi.so"),
                       ("tvm_ffi/include/tvm/ffi/", "include/tvm/ffi/"),
                       ("tvm_ffi/include/dlpack/", "include/dlpack/")],
}


# ---- the aarch64 runtime ------------------------------------------------------------------------------
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


# ---- toolchain ----------------------------------------------------------------------------------------
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


# ---- running under qemu --------------------------------------------------------------------------------
@dataclass
class QemuRun:
    outputs: list[np.ndarray]
    stdout: str
    seconds: float


def run_on_qemu(module_path: str | os.PathLike, inputs, runtime_dir=None, runner: str | os.PathLike | None = None,
                timeout: float = 600, repeat: int = 0, threads: int | None = None) -> QemuRun:
    """Run an exported aarch64 module (.so) on `inputs` (an array or a list in input order) under
    qemu-aarch64 with the runner. Returns the outputs (correctness checks only: the timings are qemu's)."""
    import time
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


# ---- the deployment folder ------------------------------------------------------------------------------
MAKEFILE = """\
# Build the patvm runner. On the board (aarch64 Linux, g++ >= 8):   make
# Cross-compiling on an x86 machine:                                 make CXX=aarch64-linux-gnu-g++
# RUNTIME is a folder with include/ (tvm-ffi headers) and lib/ (libtvm_runtime.so, libtvm_ffi.so).
CXX ?= g++
RUNTIME ?= .
CXXFLAGS ?= {cxxflags}

runner: runner.cc
\t$(CXX) $(CXXFLAGS) -I$(RUNTIME)/include runner.cc -o runner -L$(RUNTIME)/lib \\
\t\t-Wl,--no-as-needed -ltvm_runtime -ltvm_ffi -Wl,--as-needed '-Wl,-rpath,$$ORIGIN/lib' -ldl -lpthread

run: runner
\tTVM_NUM_THREADS=$(or $(THREADS),{threads}) ./runner {module} input.npy -o output.npy --repeat 20

clean:
\trm -f runner
.PHONY: run clean
"""

README = """\
# {name}: a patvm model for {target_name} ({description})

Files: `{module}` (the compiled model: TVM Relax VM executable, aarch64), `{module}.json` (its inputs and
per-layer report), `runner.cc` + `Makefile` (a small C++ program: module + .npy inputs in, .npy outputs out){libs_line}.

Inputs: {inputs}.

## On the board ({target_name})

Copy this folder to the board (`scp -r {dirname} pi@raspberrypi.local:`), then on the board:

```sh
cd {dirname}
{board_build}
python3 -c "import numpy as np; np.save('input.npy', np.random.rand({shape_args}).astype('float32'))"
TVM_NUM_THREADS={threads} ./runner {module} input.npy -o output.npy --repeat 20
python3 -c "import numpy as np; y = np.load('output.npy'); print(y.shape, y.reshape(y.shape[0], -1).argmax(1))"
```

`--repeat 20` prints the mean and best latency of 20 more runs. Set `TVM_NUM_THREADS` to the number of
cores to use ({threads} on this target). The board needs glibc >= 2.27 and libstdc++ from GCC >= 8 (what the
TVM runtime in lib/ needs){runner_note}.

## Here (x86), under qemu-user: checks results, never speed

```sh
{here_build}
qemu-aarch64 -L /usr/aarch64-linux-gnu ./runner {module} input.npy -o output.npy
```

qemu emulates every instruction in software: its timings say nothing about the board.
`patvm deploy MODEL.onnx --target {target_name} -o DIR --build --run input.npy --verify` does the same and
compares with onnxruntime.
"""


@dataclass
class Deployment:
    out_dir: Path
    module: Path
    target: str
    files: list[str] = field(default_factory=list)
    runner: Path | None = None
    runtime: Path | None = None


def _compiled_for_deploy(model, target):
    """(CompiledModel or None, exported .so path or None, target name, family, inputs)."""
    from patvm.runtime import SIDECAR_SUFFIX
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".so"):
        path = os.fspath(model)
        try:
            meta = json.loads(Path(path + SIDECAR_SUFFIX).read_text())
        except (OSError, ValueError) as exc:
            raise PatvmError(f"{path}{SIDECAR_SUFFIX} is missing or unreadable: deploy modules written by "
                             "`patvm compile` / CompiledModel.export") from exc
        if not os.path.isfile(path):
            raise PatvmError(f"no such module: {path}")
        if target is not None and target != meta.get("target"):
            raise PatvmError(f"{path} was compiled for {meta.get('target')}, not {target}")
        return None, path, meta.get("target"), meta.get("family"), meta.get("inputs", [])
    if hasattr(model, "export") and hasattr(model, "family"):
        return model, None, model.target_name, model.family, model.inputs
    import patvm
    from patvm.targets import resolve_target
    spec = resolve_target(target or "arm-a72")
    if spec.family != "arm":   # refuse before the compile, not after
        return None, None, spec.name, spec.family, []
    compiled = patvm.compile(model, target=spec)
    return compiled, None, compiled.target_name, compiled.family, compiled.inputs


def deploy(model, target: str | None = "arm-a72", out_dir: str | os.PathLike = "deploy-out", name: str = "model",
           build: bool = False, runtime_dir=None, fetch: bool = False) -> Deployment:
    """Write a deployment folder for an aarch64 board.

    model: an ONNX path / ModelProto (compiled for `target`), a CompiledModel, or an exported .so (with its
    sidecar). With `fetch` the runtime is downloaded if missing; when the runtime is there its libraries and
    headers are copied in (so the folder builds on the board without pip); `build` cross-compiles the runner.
    """
    from patvm.runtime import SIDECAR_SUFFIX
    from patvm.targets import resolve_target
    compiled, so_path, target_name, family, inputs = _compiled_for_deploy(model, target)
    if family != "arm":
        raise PatvmError(f"patvm deploy is for aarch64 boards (targets arm-a72, arm-a76, ...); {target_name} is "
                         f"{family}: use `patvm compile` / `patvm run` on that machine")
    if not name or "/" in name or name.startswith("."):
        raise PatvmError(f"bad module name {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = out / f"{name}.so"
    if compiled is not None:
        compiled.export(module)
    elif Path(so_path).resolve() != module.resolve():
        shutil.copyfile(so_path, module)
        shutil.copyfile(so_path + SIDECAR_SUFFIX, str(module) + SIDECAR_SUFFIX)
    os.chmod(module, 0o755)
    os.chmod(str(module) + SIDECAR_SUFFIX, 0o644)
    shutil.copyfile(RUNNER_SOURCE, out / "runner.cc")
    files = [module.name, module.name + SIDECAR_SUFFIX, "runner.cc", "Makefile", "README.md"]

    runtime = fetch_runtime(runtime_dir) if fetch else find_runtime(runtime_dir)
    if build and runtime is None:
        runtime = require_runtime(runtime_dir)
    if runtime is not None:
        for lib in RUNTIME_LIBS:
            (out / "lib").mkdir(exist_ok=True)
            shutil.copyfile(runtime / "lib" / lib, out / "lib" / lib)
        if (out / "include").exists():
            shutil.rmtree(out / "include")
        shutil.copytree(runtime / "include", out / "include")
        files += [f"lib/{lib}" for lib in RUNTIME_LIBS] + ["include/"]
    runner = None
    if build:   # the runner does not depend on the model: reuse the one cached beside the runtime
        runner = out / "runner"
        shutil.copyfile(cached_runner(runtime), runner)
        os.chmod(runner, 0o755)
        files.append("runner")

    try:
        spec = resolve_target(target_name)
        description, threads = spec.description, int(spec.target.get("num-cores", 4))
    except PatvmError:
        description, threads = "aarch64", 4
    first = inputs[0] if inputs else {"shape": [1, 3, 224, 224], "name": "x"}
    if runtime is not None:
        board_build = "make            # native g++ on the board" + (
            "; or use the cross-built ./runner as is" if build else ""
        )
        libs_line = ", `lib/` (the aarch64 TVM runtime), `include/` (tvm-ffi headers, to build the runner)"
    else:
        board_build = (
            "# this folder has no lib/ and include/ (the runtime was not fetched when it was written):\n"
            "# re-run `patvm deploy ... --fetch-runtime` on the x86 machine, "
            "or take them from the wheels on the board:\n"
            f"pip install apache-tvm=={TVM_VERSION} apache-tvm-ffi=={TVM_FFI_VERSION}\n"
            "mkdir -p lib include\n"
            "cp \"$(python3 -c 'import os, tvm; print(os.path.dirname(tvm.__file__))')/lib/libtvm_runtime.so\" lib/\n"
            'cp "$(tvm-ffi-config --libdir)/libtvm_ffi.so" lib/ && cp -r "$(tvm-ffi-config --includedir)"/* include/\n'
            "make"
        )
        libs_line = ""
    here_build = ("make CXX=aarch64-linux-gnu-g++   # or: patvm deploy ... --build" if not build
                  else "# ./runner was cross-built by `patvm deploy --build`")
    readme = README.format(
        name=name,
        target_name=target_name,
        description=description or "aarch64",
        module=module.name,
        libs_line=libs_line,
        inputs=", ".join(f"`{i['name']}` {i.get('dtype', 'float32')} {list(i['shape'])}" for i in inputs)
        or "see the sidecar",
        dirname=out.name,
        board_build=board_build,
        shape_args=", ".join(str(d) for d in first["shape"]),
        threads=threads,
        here_build=here_build,
        runner_note=(
            "; the cross-built `runner` needs the board's C and C++ libraries as new as the cross "
            "compiler's: glibc >= 2.34, GCC >= 11 (Raspberry Pi OS / Debian 12 bookworm, Ubuntu 22.04); on "
            "older systems `make` it on the board"
            if build
            else ""
        ),
    )
    (out / "README.md").write_text(readme)
    (out / "Makefile").write_text(MAKEFILE.format(cxxflags=" ".join(CXXFLAGS), threads=threads, module=module.name))
    return Deployment(out, module, target_name, files, runner, runtime)


def _check_input(x: np.ndarray, inputs: list[dict], path: str) -> None:
    if len(inputs) != 1:
        raise PatvmError(f"the model takes {len(inputs)} inputs; --run takes one .npy (use run_on_qemu)")
    spec = inputs[0]
    if x.dtype != np.dtype(spec.get("dtype", "float32")) or list(x.shape) != list(spec["shape"]):
        raise PatvmError(f"{path}: the model's input '{spec['name']}' is {spec.get('dtype', 'float32')} "
                         f"{list(spec['shape'])}, the file holds {x.dtype} {list(x.shape)}")


def deploy_command(args) -> None:
    """`patvm deploy` (see patvm/cli.py for the options)."""
    if args.model is None:
        if not args.fetch_runtime:
            raise PatvmError("give a MODEL (.onnx, or a .so exported for an ARM target), or --fetch-runtime")
        print(fetch_runtime(args.runtime_dir, args.wheel_dir, quiet=False))
        return
    if not args.output:
        raise PatvmError("-o DIR is required: the folder to write")
    if args.verify and not args.run:
        raise PatvmError("--verify needs --run INPUT.npy")
    if args.fetch_runtime:
        fetch_runtime(args.runtime_dir, args.wheel_dir, quiet=False)
    x = None
    if args.run:   # read the input before the (slow) compile, so that a bad file fails fast
        try:
            x = np.load(args.run, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PatvmError(f"cannot read input {args.run}: {exc}") from exc
    result = deploy(args.model, target=args.target, out_dir=args.output, name=args.name, build=args.build,
                    runtime_dir=args.runtime_dir)
    print(f"wrote {result.out_dir}/: {', '.join(result.files)}")
    if result.runtime is None:
        print("note: no aarch64 runtime in the folder (run with --fetch-runtime to add lib/ and include/)")
    print(f"see {result.out_dir / 'README.md'} for the commands on the board")
    if x is None:
        return
    meta = json.loads(Path(str(result.module) + ".json").read_text())
    _check_input(x, meta.get("inputs", []), args.run)
    run = run_on_qemu(result.module, x, runtime_dir=args.runtime_dir, runner=result.runner)
    out_path = result.out_dir / "output.npy"
    np.save(out_path, run.outputs[0])
    y = run.outputs[0]
    top1 = np.argmax(y.reshape(y.shape[0], -1), 1).tolist() if y.ndim > 1 else [int(np.argmax(y))]
    print(f"ran under qemu in {run.seconds:.1f} s (emulated: says nothing about the board's speed): "
          f"output shape {list(y.shape)}, top-1 {top1}; wrote {out_path}")
    if args.verify:
        onnx_path = args.verify_onnx or (args.model if str(args.model).endswith(".onnx") else None)
        if onnx_path is None:
            raise PatvmError("--verify on a .so needs --onnx MODEL.onnx (the model it was compiled from)")
        from patvm.verify import compare_with_onnxruntime
        print(compare_with_onnxruntime(onnx_path, x, y).summary())


def main(argv=None) -> int:
    """`python -m patvm.deploy [--runtime-dir DIR] [--wheel-dir DIR] [--force]`: fetch the aarch64 runtime."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m patvm.deploy", description="fetch the aarch64 TVM runtime")
    p.add_argument("--runtime-dir")
    p.add_argument("--wheel-dir")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    try:
        root = fetch_runtime(args.runtime_dir, args.wheel_dir, force=args.force, quiet=False)
    except PatvmError as exc:
        print(f"patvm: error: {exc}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
