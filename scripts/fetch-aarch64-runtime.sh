#!/usr/bin/env bash
# Fetch the aarch64 TVM runtime for the ARM tests and `patvm deploy`: the aarch64 wheels of the pinned
# apache-tvm / apache-tvm-ffi (pip download from PyPI), of which libtvm_runtime.so, libtvm_ffi.so and the
# tvm-ffi headers are kept in ~/.cache/patvm/aarch64-runtime/ (or $PATVM_AARCH64_RUNTIME).
# A set-up step: nothing downloads at model run time. Does nothing when the cache is complete.
# Options go to `patvm deploy --fetch-runtime`: --runtime-dir DIR, --wheel-dir DIR (offline), --force.
# Exit status 0 when the runtime is there; 2 (with one line on stderr) when it cannot be fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m patvm deploy --fetch-runtime "$@"
