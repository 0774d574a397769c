"""What runs in MetaSchedule's builder processes, and the import MetaSchedule should not make.

`import tvm.s_tir.tensor_intrin` (TuneContext's constructor and MetaSchedule's default build function
both do it) parses every tensor intrinsic TVM ships, CUDA, ROCm, Hexagon, ARM and x86 alike: ~40 s of CPU
in every process that does it. LocalBuilder starts fresh worker processes for every batch, so with the
default build function each batch paid that again and the 30 s build timeout killed every candidate on a
busy 2-core machine. patvm's bit-serial and fp32 kernels use no tensor intrinsics on CPUs, so for llvm
targets the builder runs `build_module` (the default build minus that import), and task construction
happens under `patvm.tensor_intrinsics.cpu_tensor_intrinsics()`.
"""
from __future__ import annotations


def build_module(mod, target, _params):
    """MetaSchedule's default build function without the tensor-intrinsic import (runs in a worker)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)
