"""Deploy a compiled model to an aarch64 board (Raspberry Pi 4 = arm-a72, Pi 5 / RK3588 = arm-a76), or run
it here under qemu-user.

    runtime_fetch   the aarch64 TVM runtime from the pinned wheels, cached outside the repository
    runner          the C++ runner (deploy/runner.cc) cross-built against it, and the toolchain check
    qemu            run_on_qemu: an exported aarch64 module run here under qemu-aarch64
    folder          deploy(): the folder to copy to the board
    command         `patvm deploy` (its one command line, in patvm/cli.py)

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
from patvm.deploy.folder import Deployment, deploy
from patvm.deploy.qemu import QemuRun, run_on_qemu
from patvm.deploy.runner import (
    CROSS_CXX,
    CXXFLAGS,
    LDFLAGS,
    QEMU,
    QEMU_SYSROOT,
    RUNNER_SOURCE,
    build_runner,
    cached_runner,
    toolchain_problems,
)
from patvm.deploy.runtime_fetch import (
    MANIFEST,
    RUNTIME_LIBS,
    TVM_FFI_VERSION,
    TVM_VERSION,
    default_runtime_dir,
    fetch_runtime,
    find_runtime,
    require_runtime,
)

__all__ = [
    "CROSS_CXX", "CXXFLAGS", "LDFLAGS", "MANIFEST", "QEMU", "QEMU_SYSROOT", "RUNNER_SOURCE", "RUNTIME_LIBS",
    "TVM_FFI_VERSION", "TVM_VERSION", "Deployment", "QemuRun", "build_runner", "cached_runner",
    "default_runtime_dir", "deploy", "fetch_runtime", "find_runtime", "require_runtime", "run_on_qemu",
    "toolchain_problems",
]
