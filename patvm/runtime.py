"""CompiledModel: run, export and report a compiled module; `load_module` reads an exported one back.

An export is a shared library the plain TVM runtime loads (`tvm.runtime.load_module` + the Relax VM),
plus a small JSON sidecar (`<path>.json`) with the input signature and the per-layer report.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass

import numpy as np

from patvm.errors import InputError, PatvmError, last_line
from patvm.files import atomic_path, atomic_write_bytes

SIDECAR_SUFFIX = ".json"
TVM_ALIGNMENT = 64      # bytes: tvm.runtime.from_dlpack refuses other addresses


class CompiledModel:
    def __init__(self, module, target_name: str, family: str, inputs: list[dict], layers: list[dict],
                 cross_compiler: str | None = None, compile_seconds: float | None = None,
                 schedules: dict | None = None, weight_codes: bool = False):
        self.module = module                  # tvm Executable (fresh build) or runtime Module (loaded)
        self.target_name = target_name
        self.family = family
        self.inputs = inputs                  # [{"name", "shape", "dtype"}]
        self.layers = layers                  # LayerReport dicts
        self.cross_compiler = cross_compiler
        self.compile_seconds = compile_seconds
        # {"database": folder or None, "shipped": bool, "kernels": n, "tuned": [kernel names]}
        self.schedules = schedules or {}
        # weights stored as codes (patvm.compiler.weight_codes): expanded once, shared by every thread's VM
        self.weight_codes = weight_codes
        self._expanded: list | None = None
        self._expand_lock = threading.Lock()
        self._local = threading.local()       # one VM per thread: a VM is not thread-safe

    # ---- running
    def _device(self):
        import tvm
        return tvm.cuda(0) if self.family == "cuda" else tvm.cpu(0)

    def _vm(self):
        return self._thread_state().vm

    def _thread_state(self) -> _ThreadState:
        """This thread's VM, its `main` and preallocated input tensors (a VM is not thread-safe)."""
        state = getattr(self._local, "state", None)
        if state is None:
            if self.family == "arm" and os.uname().machine not in ("aarch64", "arm64"):
                raise PatvmError(f"this module is compiled for {self.target_name} (aarch64): run it on the board, "
                                 "or under qemu with `patvm deploy`")
            import tvm
            from tvm import relax
            dev = self._device()
            vm = relax.VirtualMachine(self.module, dev)
            inputs = [tvm.runtime.empty(tuple(i["shape"]), i["dtype"], dev) for i in self.inputs]
            views = [] if self.family == "cuda" else [np.from_dlpack(t) for t in inputs]
            state = self._local.state = _ThreadState(vm, vm["main"], inputs, views)
        return state

    def expanded_weights(self) -> list:
        """The expanded weights `main` takes after its inputs (none unless the module stores codes)."""
        if not self.weight_codes:
            return []
        if self._expanded is not None:
            return self._expanded
        with self._expand_lock:
            if self._expanded is None:
                from patvm.compiler.weight_codes import CODES_FUNCTION
                vm = self._vm()
                self._expanded = list(vm["main_transform_params"](vm[CODES_FUNCTION]()))
            return self._expanded

    def _arguments(self, inputs) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            unknown = set(inputs) - {i["name"] for i in self.inputs}
            if unknown:
                raise InputError(f"unknown input name(s) {sorted(unknown)}; the model takes "
                                 f"{[i['name'] for i in self.inputs]}")
            missing = [i["name"] for i in self.inputs if i["name"] not in inputs]
            if missing:
                raise InputError(f"missing input(s) {missing}")
            arrays = [inputs[i["name"]] for i in self.inputs]
        elif isinstance(inputs, (list, tuple)):
            arrays = list(inputs)
        else:
            arrays = [inputs]
        if len(arrays) != len(self.inputs):
            raise InputError(f"the model takes {len(self.inputs)} input(s), got {len(arrays)}")
        for spec, array in zip(self.inputs, arrays):
            if not isinstance(array, np.ndarray):
                raise InputError(f"input '{spec['name']}' must be a numpy array, got {type(array).__name__}")
            if array.dtype != np.dtype(spec["dtype"]):
                raise InputError(f"input '{spec['name']}' must be {spec['dtype']}, got {array.dtype}")
            if tuple(array.shape) != tuple(spec["shape"]):
                raise InputError(f"input '{spec['name']}' must have shape {list(spec['shape'])}, "
                                 f"got {list(array.shape)}")
        return [np.ascontiguousarray(a) for a in arrays]

    def run(self, inputs=None) -> list[np.ndarray]:
        """inputs: one array, a list in input order, or a dict by input name; None runs on what the arrays
        of `input_buffers()` hold. A C-contiguous CPU array aligned to 64 bytes (TVM's alignment) is read
        where it is; any other is copied into a preallocated tensor. Returns the outputs (on a CPU, views
        of the tensors the module wrote: no copy)."""
        state = self._thread_state()
        if inputs is None:
            tensors, callers = state.inputs, []
        else:
            tensors, callers = [], []
            for k, array in enumerate(self._arguments(inputs)):
                caller_tensor = self._zero_copy(array)
                if caller_tensor is not None:
                    tensors.append(caller_tensor)
                    callers.append(array)
                elif state.input_views:        # a CPU: numpy's copy (TVM's copyfrom costs ~15 us more)
                    np.copyto(state.input_views[k], array)
                    tensors.append(state.inputs[k])
                else:
                    state.inputs[k].copyfrom(array)
                    tensors.append(state.inputs[k])
        result = state.main(*tensors, *self.expanded_weights())
        outputs = _to_numpy(result, copy=self.family == "cuda")
        # an output that is a view of an input (a model returning a reshape of it) would change when the
        # input does (the next run refills the input tensors): such an output is copied
        held = state.input_views + callers
        return [o.copy() if any(np.may_share_memory(o, v) for v in held) else o for o in outputs]

    def input_buffers(self) -> list[np.ndarray]:
        """This thread's preallocated input tensors as numpy arrays (CPU): fill them, then `run()`
        without arguments, and nothing is copied."""
        if self.family == "cuda":
            raise PatvmError("input_buffers() is for CPU modules; a CUDA module copies its inputs to the GPU")
        return list(self._thread_state().input_views)

    def _zero_copy(self, array: np.ndarray):
        """`array` as a TVM tensor over the same memory, or None where TVM cannot take it as it is."""
        if (self.family == "cuda" or array.__array_interface__["data"][0] % TVM_ALIGNMENT
                or not array.flags.writeable):
            return None
        import tvm
        try:
            return tvm.runtime.from_dlpack(array)
        except (BufferError, RuntimeError):
            return None

    def time(self, inputs, number: int = 5, repeat: int = 20, min_repeat_ms: int = 50) -> np.ndarray:
        """Per-run latency samples in milliseconds (TVM's time_evaluator; set TVM_NUM_THREADS first)."""
        import tvm
        dev = self._device()
        args = [tvm.runtime.tensor(a, dev) for a in self._arguments(inputs)]
        timer = self._vm().time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
        return np.asarray(timer(*args, *self.expanded_weights()).results) * 1e3

    # ---- files
    def export(self, path: str | os.PathLike) -> None:
        """Write the shared library and its sidecar atomically."""
        path = os.fspath(path)
        kwargs = {}
        if self.cross_compiler:
            from tvm.support import cc
            kwargs["fcompile"] = cc.cross_compiler(self.cross_compiler)
        with atomic_path(path, suffix=".so") as tmp:
            try:
                self.module.export_library(tmp, **kwargs)
            except Exception as exc:  # a missing cross compiler, a full disk, ...
                raise PatvmError(f"cannot export {path}: {last_line(exc, 200)}") from exc
        meta = {"format": "patvm-module-1", "target": self.target_name, "family": self.family,
                "inputs": self.inputs, "layers": self.layers, "schedules": self.schedules,
                "weight_codes": self.weight_codes}
        atomic_write_bytes(path + SIDECAR_SUFFIX, json.dumps(meta, indent=1).encode())

    # ---- report
    def module_weight_bytes(self) -> int:
        return sum(int(layer.get("packed_weight_bytes") or 0) for layer in self.layers)

    def report(self) -> str:
        rows = [
            f"target {self.target_name}"
            + (f", compiled in {self.compile_seconds:.1f} s" if self.compile_seconds else "")
        ]
        header = (f"{'#':>3} {'op':6} {'strategy':10} {'M':>2} {'N':>2} {'input':>18} {'weight':>18} "
                  f"{'packed B':>9} {'fp32 B':>9}  note")
        rows.append(header)
        rows.append("-" * len(header))
        for layer in self.layers:
            rows.append(
                f"{layer['index']:>3} {layer['op']:6} {layer['strategy']:10} {layer.get('M') or '-':>2} "
                f"{layer.get('N') or '-':>2} {str(list(layer.get('input_shape') or [])):>18} "
                f"{str(list(layer.get('weight_shape') or [])):>18} {layer.get('packed_weight_bytes') or 0:>9} "
                f"{layer.get('fp32_weight_bytes') or 0:>9}  {layer.get('reason') or layer.get('weight_kind') or ''}")
        binary = [la for la in self.layers if la["strategy"] == "bit-serial"]
        rows.append(f"{len(binary)} of {len(self.layers)} conv/dense layers bit-serial; packed binary weights "
                    f"{self.module_weight_bytes() / 1e6:.2f} MB vs "
                    f"{sum(la.get('fp32_weight_bytes') or 0 for la in binary) / 1e6:.2f} MB as fp32")
        rows.append(self.schedules_line())
        return "\n".join(rows)

    def schedules_line(self) -> str:
        s = self.schedules
        if "kernels" not in s:
            return "schedules: not recorded (a module exported before patvm recorded them)"
        if not s.get("database"):
            return f"schedules: {s['kernels']} kernels, all hand-scheduled (no tuning database)"
        origin = "shipped for this target" if s.get("shipped") else "given"
        rest = ", the others hand-scheduled" if len(s["tuned"]) < s["kernels"] else ""
        return (f"schedules: {len(s['tuned'])} of {s['kernels']} kernels from the tuning database {s['database']} "
                f"({origin}){rest}")


@dataclass
class _ThreadState:
    vm: object
    main: object
    inputs: list            # preallocated input tensors, refilled by every run
    input_views: list       # numpy views of them (CPU)


def _to_numpy(result, copy: bool) -> list[np.ndarray]:
    tensors = [result] if hasattr(result, "numpy") else list(result)
    return [t.numpy() if copy else np.from_dlpack(t) for t in tensors]


def layer_dicts(reports) -> list[dict]:
    return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(r).items()} for r in reports]


def load_module(path: str | os.PathLike) -> CompiledModel:
    import tvm
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PatvmError(f"no such module: {path}")
    sidecar = path + SIDECAR_SUFFIX
    if not os.path.isfile(sidecar):
        raise PatvmError(f"{sidecar} is missing: export modules with `patvm compile` / CompiledModel.export")
    try:
        meta = json.loads(open(sidecar).read())
        assert meta.get("format") == "patvm-module-1"
    except (ValueError, AssertionError) as exc:
        raise PatvmError(f"{sidecar} is not a patvm module description") from exc
    try:
        module = tvm.runtime.load_module(os.path.abspath(path))
    except Exception as exc:  # TVM raises its own error types for unloadable files
        raise PatvmError(f"cannot load {path}: {last_line(exc, 200)}") from exc
    return CompiledModel(module, meta["target"], meta["family"], meta["inputs"], meta["layers"],
                         schedules=meta.get("schedules"), weight_codes=bool(meta.get("weight_codes")))


def module_source(module, fmt: str = "asm") -> str:
    """The generated source of a built module and all its imports, however deep (the VM executable holds
    the host code one level down and device code, CUDA say, two levels down)."""
    texts, stack = [], [module]
    while stack:
        mod = stack.pop()
        try:
            texts.append(mod.inspect_source(fmt))
        except Exception:  # noqa: BLE001 - modules that cannot print this format
            pass
        stack.extend(getattr(mod, "imports", []))
    return "\n".join(t for t in texts if t)
