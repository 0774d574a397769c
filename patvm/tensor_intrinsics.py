"""TVM's tensor intrinsics, registered as MetaSchedule needs them and no more.

`import tvm.s_tir.tensor_intrin` (TuneContext's constructor and MetaSchedule's default build function
both do it) parses every tensor intrinsic TVM ships, CUDA, ROCm, Hexagon, ARM and x86 alike: ~40 s of CPU.
MetaSchedule's CPU rules need only their family's: on x86 with VNNI or AVX-512 they tile with
'dot_16x4_vnni' / 'dot_16x4_avx512', on aarch64 with the NEON / SDOT dot products, and a rule that names
an unregistered intrinsic fails every task ("TensorIntrin 'dot_16x4_vnni' is not registered"). So every
MetaSchedule use (task construction, tuning, applying a database) runs under `cpu_tensor_intrinsics`.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types

INTRIN_MODULE = "tvm.s_tir.tensor_intrin"


def needs_tensor_intrinsics(target) -> bool:
    """GPU targets may tensorize with any of TVM's intrinsics (wmma / mma rules): import them all there."""
    return target.kind.name != "llvm"


def cpu_intrinsic_module(target) -> str:
    """The module of `tvm.s_tir.tensor_intrin` holding the intrinsics MetaSchedule's rules for this CPU name."""
    triple = str(target.attrs.get("mtriple", "") or "")
    return "arm_cpu" if triple.startswith(("aarch64", "arm")) else "x86"


@contextlib.contextmanager
def cpu_tensor_intrinsics(target):
    """Inside the block, `import tvm.s_tir.tensor_intrin` registers only the CPU intrinsics `target` can
    use (~0.6 s for x86, ~3 s for ARM, instead of ~40 s for all of them); other targets import everything.

    The package is a stand-in while the block runs, so the import MetaSchedule makes finds the family's
    module already registered. That module stays imported afterwards: a later real import of the package
    (a CUDA build in the same process) reuses it instead of registering its intrinsics twice."""
    if needs_tensor_intrinsics(target) or INTRIN_MODULE in sys.modules:
        importlib.import_module(INTRIN_MODULE)
        yield
        return
    import tvm.s_tir as parent
    stub = types.ModuleType(INTRIN_MODULE)
    stub.__doc__ = "patvm stand-in: only the CPU family's tensor intrinsics are registered"
    stub.__path__ = [os.path.join(os.path.dirname(parent.__file__), "tensor_intrin")]
    sys.modules[INTRIN_MODULE] = stub
    try:
        importlib.import_module(f"{INTRIN_MODULE}.{cpu_intrinsic_module(target)}")
        yield
    finally:
        if sys.modules.get(INTRIN_MODULE) is stub:
            del sys.modules[INTRIN_MODULE]
        if getattr(parent, "tensor_intrin", None) is stub:
            delattr(parent, "tensor_intrin")
