"""The deployment folder for a board: module .so + sidecar, runner.cc, Makefile, a README with the exact
commands, and (when fetched) the runtime libraries and headers."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from patvm.deploy.runner import CXXFLAGS, RUNNER_SOURCE, cached_runner
from patvm.deploy.runtime_fetch import (
    RUNTIME_LIBS,
    TVM_FFI_VERSION,
    TVM_VERSION,
    fetch_runtime,
    find_runtime,
    require_runtime,
)
from patvm.errors import PatvmError

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
