"""What runs in MetaSchedule's builder processes, and the import MetaSchedule should not make.

`import tvm.s_tir.tensor_intrin` (TuneContext's constructor and MetaSchedule's default build function
both do it) parses every tensor intrinsic TVM ships, CUDA, ROCm, Hexagon, ARM and x86 alike: ~40 s of CPU
in every process that does it. LocalBuilder starts fresh worker processes for every batch, so with the
default build function each batch paid that again and the 30 s build timeout killed every candidate on a
busy 2-core machine. patvm's bit-serial and fp32 kernels use no tensor intrinsics on CPUs, so for llvm
targets the builder runs `build_module` (the default build minus that import) and task construction
happens under `skip_tensor_intrinsics()`.
"""
from __future__ import annotations

import contextlib
import sys
import types

INTRIN_MODULE = "tvm.s_tir.tensor_intrin"


def build_module(mod, target, _params):
    """MetaSchedule's default build function without the tensor-intrinsic import (runs in a worker)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def needs_tensor_intrinsics(target) -> bool:
    """Only GPU targets may tensorize (wmma / mma rules); CPU schedule rules for llvm use none."""
    return target.kind.name != "llvm"


@contextlib.contextmanager
def skip_tensor_intrinsics(enabled: bool = True):
    """Make `import tvm.s_tir.tensor_intrin` a no-op inside the block (unless it is imported already).

    The stub is removed afterwards, so a later real import (a CUDA build in the same process) still
    registers the intrinsics."""
    if not enabled or INTRIN_MODULE in sys.modules:
        yield
        return
    import tvm.s_tir as parent
    stub = types.ModuleType(INTRIN_MODULE)
    stub.__doc__ = "patvm stub: tensor intrinsics not registered (not needed for llvm targets)"
    sys.modules[INTRIN_MODULE] = stub
    try:
        yield
    finally:
        if sys.modules.get(INTRIN_MODULE) is stub:
            del sys.modules[INTRIN_MODULE]
        if getattr(parent, "tensor_intrin", None) is stub:
            delattr(parent, "tensor_intrin")
