"""MetaSchedule's CPU rules name TVM's x86 (VNNI, AVX-512) and ARM dot-product intrinsics: patvm registers
them before any MetaSchedule use, so tuning works on VNNI CPUs (it died there with "TensorIntrin
'dot_16x4_vnni' is not registered")."""
import pytest
import tvm
from tvm import te

from patvm.targets import list_presets, resolve_target
from patvm.tensor_intrinsics import cpu_intrinsic_module, cpu_tensor_intrinsics

CPU_PRESETS = sorted(name for name, preset in list_presets().items() if preset.get("target", {}).get("kind") == "llvm")


def int8_matmul():
    """u8 x s8 -> s32, the shape MetaSchedule's VNNI rule tensorizes."""
    a = te.placeholder((64, 128), "uint8")
    b = te.placeholder((64, 128), "int8")
    k = te.reduce_axis((0, 128))
    c = te.compute((64, 64), lambda i, j: te.sum(a[i, k].astype("int32") * b[j, k].astype("int32"), axis=k))
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_tuning_context_builds_design_spaces_for_every_cpu_preset(preset):
    from tvm.s_tir import meta_schedule as ms
    target = resolve_target(preset).tvm_target()
    with cpu_tensor_intrinsics(target):
        context = ms.TuneContext(mod=int8_matmul(), target=target, space_generator="post-order-apply",
                                 search_strategy="evolutionary", num_threads=2).clone()
        spaces = context.generate_design_space()
    assert spaces
    if preset == "x86-avx512":   # icelake-server has VNNI: the rule really tiles with the intrinsic
        assert any("dot_16x4_vnni" in str(space.trace) for space in spaces)


def test_each_cpu_family_registers_its_own_module():
    assert cpu_intrinsic_module(resolve_target("x86-avx512").tvm_target()) == "x86"
    assert cpu_intrinsic_module(resolve_target("arm-a72").tvm_target()) == "arm_cpu"
