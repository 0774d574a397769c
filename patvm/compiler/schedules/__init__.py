"""Phase 4a, schedule: the hand schedules per target family, as dlight ScheduleRules.

`schedule_pass(spec)` applies them to every PrimFunc that is not scheduled yet (MetaSchedule's database
is applied first, so tuned records win).
"""
from __future__ import annotations

from tvm.s_tir import dlight

from patvm.compiler.schedules.arm import BitSerialNEON
from patvm.compiler.schedules.cpu import (
    BitSerialCPU,
    Conv2dBlockedCPU,
    Conv2dNCHWCPU,
    DenseCPU,
    DepthwiseNCHWCPU,
    GenericCPU,
    PackActivationCPU,
)


def schedule_rules(family: str) -> list:
    if family == "cuda":
        from patvm.compiler.schedules.cuda import cuda_rules
        return cuda_rules()
    neon = [BitSerialNEON()] if family == "arm" else []    # the NEON counts micro-kernel; BitSerialCPU otherwise
    return neon + [BitSerialCPU(), PackActivationCPU(), Conv2dBlockedCPU(), DepthwiseNCHWCPU(), Conv2dNCHWCPU(),
                   DenseCPU(), GenericCPU()]


def schedule_pass(family: str):
    return dlight.ApplyDefaultSchedule(*schedule_rules(family))
