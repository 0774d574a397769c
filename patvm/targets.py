"""Targets: the presets in targets/*.json, `host` detection, and TVM target dicts.

A target spec is a preset name (`patvm targets` lists them), "host", a JSON object in TVM's target form,
or a dict. "host" is the CPU this runs on, named by LLVM (`llvm_get_system_cpu`), never "mcpu: native"
(which TVM 0.27 silently ignores, giving generic x86-64 code without popcnt).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from patvm.data import data_dir
from patvm.errors import PatvmError
from patvm.host import usable_cores

PRESET_DIR = data_dir("targets")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    family: str                     # "x86", "arm", "cuda" or "cpu"
    target: dict
    host: dict | None = None
    description: str = ""
    cross_compiler: str | None = None
    require_asm: tuple = ()
    forbid_asm: tuple = ()
    extra: dict = field(default_factory=dict)

    def tvm_target(self):
        import tvm
        if self.host is not None:
            return tvm.target.Target(self.target, host=self.host)
        return tvm.target.Target(self.target)

    @property
    def is_cpu(self) -> bool:
        return self.family in ("x86", "arm", "cpu")

    def runs_here(self) -> bool:
        """Whether code for this target executes on this machine."""
        if self.family == "cuda":
            return cuda_available()
        if self.family == "arm":
            return os.uname().machine in ("aarch64", "arm64")
        if self.family == "x86":
            return os.uname().machine == "x86_64" and all(host_has_feature(f) for f in self.extra.get("features", []))
        return True


def list_presets() -> dict[str, dict]:
    presets = {"host": {"description": f"this machine's CPU ({host_cpu()}), detected"}}
    for path in sorted(PRESET_DIR.glob("*.json")):
        presets[path.stem] = json.loads(path.read_text())
    return presets


def host_cpu() -> str:
    from tvm.target import codegen
    return codegen.llvm_get_system_cpu()


def host_has_feature(feature: str) -> bool:
    import tvm
    from tvm.target import codegen
    return bool(codegen.llvm_cpu_has_features(feature, tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})))


def cuda_available() -> bool:
    import tvm
    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001 - no CUDA runtime at all
        return False


def host_spec() -> TargetSpec:
    import platform
    cores = usable_cores()
    family = "x86" if platform.machine() == "x86_64" else "arm" if platform.machine() in ("aarch64", "arm64") else "cpu"
    target = {"kind": "llvm", "mcpu": host_cpu(), "num-cores": cores}
    if family == "arm":
        target["mtriple"] = "aarch64-linux-gnu"
    return TargetSpec("host", family, target, description="this machine's CPU")


def _from_preset(name: str, data: dict) -> TargetSpec:
    return TargetSpec(name=name, family=data.get("family", "cpu"), target=dict(data["target"]),
                      host=data.get("host"), description=data.get("description", ""),
                      cross_compiler=data.get("cross_compiler"), require_asm=tuple(data.get("require_asm", ())),
                      forbid_asm=tuple(data.get("forbid_asm", ())),
                      extra={k: v for k, v in data.items() if k in ("bitserial_max_plane_pairs", "features", "peaks")})


def _from_dict(data: dict) -> TargetSpec:
    if "target" in data:
        return _from_preset(data.get("name", "custom"), data)
    kind = data.get("kind")
    if kind not in ("llvm", "cuda"):
        raise PatvmError(f"target kind must be 'llvm' or 'cuda', got {kind!r}")
    triple = str(data.get("mtriple", ""))
    family = "cuda" if kind == "cuda" else "arm" if triple.startswith("aarch64") else "x86"
    if data.get("mcpu") == "native":
        raise PatvmError("'mcpu: native' is silently ignored by TVM; use --target host instead")
    host = {"kind": "llvm"} if kind == "cuda" else None
    cross = "aarch64-linux-gnu-g++" if family == "arm" else None
    return TargetSpec("custom", family, dict(data), host=host, cross_compiler=cross)


def resolve_target(spec) -> TargetSpec:
    """Turn a preset name, "host", a JSON string or a dict into a TargetSpec (PatvmError if unknown)."""
    if isinstance(spec, TargetSpec):
        return spec
    if isinstance(spec, dict):
        return _from_dict(spec)
    if not isinstance(spec, str) or not spec:
        raise PatvmError(f"unknown target {spec!r}")
    if spec == "host":
        return host_spec()
    if spec.lstrip().startswith("{"):
        try:
            return _from_dict(json.loads(spec))
        except json.JSONDecodeError as exc:
            raise PatvmError(f"target is not valid JSON: {exc.msg} at column {exc.colno}") from exc
    path = PRESET_DIR / f"{spec}.json"
    if not path.is_file():
        raise PatvmError(f"unknown target '{spec}'; known: {', '.join(list_presets())}")
    return _from_preset(spec, json.loads(path.read_text()))


def target_key(target) -> dict:
    """The parts of a target that decide code generation (not num-cores / tags): what a tuning record and
    a shipped database are matched on. `target`: a TargetSpec, preset name, JSON string or target dict."""
    if not isinstance(target, dict):
        target = resolve_target(target).target
    keep = {}
    for name in ("kind", "mcpu", "mtriple", "mattr", "arch"):
        if target.get(name) not in (None, "", []):
            value = target[name]
            keep[name] = sorted(value) if isinstance(value, list) else value
    return keep
