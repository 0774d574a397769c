"""The databases shipped in schedules/ still apply to the models they were tuned on.

A record applies only to a structurally identical kernel, so a change to patvm's lowering or fusion (or to
TVM) silently turns a shipped database into dead weight: the build just falls back to hand schedules.
These tests compile those models for the database's preset (compiling only: they run on any x86 machine)
and require every kernel to find its record; when one fails, retune as schedules/README.md says.
"""
import pytest

import patvm
from patvm.tuning import database as dbmod

# (preset, zoo model, M, N): what each shipped database was made from (schedules/README.md)
MADE_FROM = [
    ("x86-znver3", "pa-resnet18", 2, 1),
    ("x86-znver3", "abc-resnet18", 1, 1),
    pytest.param("x86-znver3", "pa-resnet18", 2, 2, marks=pytest.mark.slow),
    pytest.param("x86-znver3", "pa-resnet18", 4, 5, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("preset,model,M,N", MADE_FROM)
def test_every_kernel_finds_its_shipped_record(preset, model, M, N):
    from patvm.zoo import build_model
    folder = dbmod.SCHEDULES_DIR / preset
    if not (folder / dbmod.RECORD_FILE).is_file():
        pytest.fail(f"{folder} is listed as shipped but holds no database")
    compiled = patvm.compile(build_model(model, M=M, N=N, seed=0), target=preset)
    s = compiled.schedules
    assert s["shipped"] and s["database"] == str(folder)
    assert len(s["tuned"]) == s["kernels"], (
        f"{s['kernels'] - len(s['tuned'])} of {s['kernels']} kernels of {model} ({M},{N}) found no record in "
        f"{folder}: retune it (schedules/README.md)")
