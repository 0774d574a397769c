"""Safe model loading: every patvm entry point calls `load_model` before TVM or onnxruntime sees a model.

Every bad input is answered with a one-line `ModelError` naming the file and the problem; nothing is read
outside the model's folder, nothing is read before its size is known, and nothing that would make the
ONNX checker or the protobuf parser misbehave reaches them. The checks, in order:

  file        exists, regular file (a FIFO or a device would hang the read), readable, not empty, <= 2 GiB
  protobuf    parses as a ModelProto and has a graph
  opsets      default domain 13 .. onnx's newest; ai.patvm exactly 1; no domain imported twice
  structure   no cycle among the nodes of any graph; no recursion among model-local functions
  tensors     known dtype; dims >= 0; <= 2**31 elements; the stored data matches the declared shape
  inputs      concrete input dims >= 0 and <= 2**31 elements
  external    location relative, inside the model's folder after realpath (no .., no symlink escape),
              an existing regular file long enough for offset + the tensor's bytes; only then loaded
  ai.patvm    only PAQuantize; its thresholds and levels are float32 initializers (not graph inputs)
              forming a valid staircase; its function (if shipped) computes the definition on every
              node's tables (run in onnxruntime on a probe: `function_check`)
  checker     onnx.checker.check_model(full_check=True), its first line reported
"""
from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Iterator

import numpy as np
import onnx
import onnx.inliner  # the submodule is not imported by `import onnx`
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

from patvm.approx.staircase import validate_staircase
from patvm.errors import ModelError, PatvmError, first_line
from patvm.onnx_format import paquantize
from patvm.onnx_format.function_check import QuantizerUse, function_problem

MAX_FILE_BYTES = 2 * 1024**3
MAX_ELEMENTS = 2**31
MIN_DEFAULT_OPSET = 13
PATVM_OPSET = paquantize.VERSION
DEFAULT_DOMAINS = ("", "ai.onnx")
EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})
MESSAGE_PART_LIMIT = 160
PATH_LIMIT = 4096


# ---------------------------------------------------------------------------------------------- messages
def one_line(text: object, limit: int = MESSAGE_PART_LIMIT) -> str:
    """A hostile string (node name, path, checker output) made safe for a one-line message."""
    s = str(text)
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def printable_first_line(exc: BaseException) -> str:
    """An exception's first line (patvm.errors.first_line) made safe for a one-line message."""
    return one_line(first_line(exc), 300)


class _Source:
    """Where a model came from: its name in messages and the folder its external data must stay in."""

    def __init__(self, label: str, folder: str | None):
        self.label = label
        self.folder = folder

    def fail(self, problem: str) -> ModelError:
        return ModelError(f"{self.label}: {problem}")

    def require(self, condition: bool, problem: str) -> None:
        if not condition:
            raise self.fail(problem)


# ---------------------------------------------------------------------------------------------- entry
def load_model(path_or_model, base_dir: str | os.PathLike | None = None) -> onnx.ModelProto:
    """Check a model file (or an in-memory ModelProto) and return it with its external data loaded.

    `base_dir` is the folder external data of an in-memory model resolves against (a path's own folder
    otherwise); an in-memory model without it may not use external data.
    """
    if isinstance(path_or_model, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(path_or_model)
        folder = os.fspath(base_dir) if base_dir is not None else None
        source = _Source(f"model '{one_line(model.graph.name or 'in memory')}'", folder)
    elif isinstance(path_or_model, (str, os.PathLike)):
        path = os.fspath(path_or_model)
        source = _Source(
            one_line(path, PATH_LIMIT), os.path.dirname(os.path.abspath(path)) if _is_plain(path) else None
        )
        model = parse_model(read_model_bytes(path, source), source)
    else:
        raise ModelError(f"expected a model path or an onnx.ModelProto, got {type(path_or_model).__name__}")
    check_model_proto(model, source)
    return model


def _is_plain(path: str) -> bool:
    return "\0" not in path


def check_model_proto(model: onnx.ModelProto, source: _Source) -> None:
    """All checks after parsing; loads external data into `model` in place."""
    source.require(model.HasField("graph"), "parses as protobuf but has no graph: not an ONNX model")
    check_opsets(model, source)
    check_function_recursion(model, source)
    for graph, where in all_graphs(model):
        check_acyclic(graph, where, source)
    external = check_tensors(model, source)
    check_graph_input_shapes(model.graph, source)
    load_checked_external_data(external, source)
    check_patvm_functions(model, check_patvm_nodes(model, source), source)
    run_onnx_checker(model, source)


# ---------------------------------------------------------------------------------------------- file
def read_model_bytes(path: str, source: _Source) -> bytes:
    """The file's bytes, after refusing anything that is not a readable regular file of sane size."""
    st = stat_model_file(path, source)
    source.require(not stat.S_ISDIR(st.st_mode), "is a directory, not a model file")
    source.require(stat.S_ISREG(st.st_mode), "is not a regular file (a pipe, socket or device)")
    source.require(st.st_size > 0, "file is empty")
    source.require(st.st_size <= MAX_FILE_BYTES,
                   f"file is {st.st_size} bytes, over the {MAX_FILE_BYTES} byte limit")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise source.fail(f"cannot read the file: {one_line(exc.strerror or exc)}") from None
    source.require(len(data) <= MAX_FILE_BYTES, f"file grew over the {MAX_FILE_BYTES} byte limit while read")
    source.require(len(data) > 0, "file is empty")
    return data


def stat_model_file(path: str, source: _Source) -> os.stat_result:
    source.require(_is_plain(path), "path contains a NUL character")
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise source.fail("no such file") from None
    except OSError as exc:
        raise source.fail(f"cannot access the file: {one_line(exc.strerror or exc)}") from None


def parse_model(data: bytes, source: _Source) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - DecodeError, or RuntimeError from some protobuf backends
        raise source.fail(f"not an ONNX protobuf file (corrupt or truncated): {printable_first_line(exc)}") from None
    return model


# ---------------------------------------------------------------------------------------------- opsets
def check_opsets(model: onnx.ModelProto, source: _Source) -> None:
    versions = opset_versions(model.opset_import, "the model", source)
    default = [versions[d] for d in DEFAULT_DOMAINS if d in versions]
    source.require(len(default) == 1, "imports no default-domain (ai.onnx) opset" if not default
                   else "imports the default domain twice (as '' and 'ai.onnx')")
    newest = onnx.defs.onnx_opset_version()
    source.require(MIN_DEFAULT_OPSET <= default[0] <= newest,
                   f"default-domain opset {default[0]} is unsupported (patvm takes {MIN_DEFAULT_OPSET}..{newest})")
    for function in model.functions:
        where = f"function '{one_line(function.domain)}::{one_line(function.name)}'"
        opset_versions(function.opset_import, where, source)


def opset_versions(imports, where: str, source: _Source) -> dict[str, int]:
    versions: dict[str, int] = {}
    for entry in imports:
        source.require(entry.domain not in versions, f"{where} imports domain '{one_line(entry.domain)}' twice")
        versions[entry.domain] = entry.version
    if paquantize.DOMAIN in versions:
        source.require(versions[paquantize.DOMAIN] == PATVM_OPSET,
                       f"{where} imports {paquantize.DOMAIN} opset {versions[paquantize.DOMAIN]}, "
                       f"patvm knows only version {PATVM_OPSET}")
    return versions


# ---------------------------------------------------------------------------------------------- structure
def all_graphs(model: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto | onnx.FunctionProto, str]]:
    """The main graph, every subgraph (If/Loop/Scan bodies) and every function body, with a label."""
    yield from _graph_and_subgraphs(model.graph, f"graph '{one_line(model.graph.name)}'")
    for function in model.functions:
        yield from _graph_and_subgraphs(function, f"function '{one_line(function.domain)}::{one_line(function.name)}'")


def _graph_and_subgraphs(graph, where: str):
    stack = [(graph, where)]
    while stack:
        g, label = stack.pop()
        yield g, label
        for node in g.node:
            for attr in node.attribute:
                subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                for sub in subs:
                    stack.append((sub, f"subgraph '{one_line(sub.name)}' of node '{one_line(node.name)}'"))


def check_acyclic(graph, where: str, source: _Source) -> None:
    """Kahn's algorithm over the nodes; a value consumed but produced nowhere here comes from outside."""
    producer = {}
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = i
    consumers: list[set[int]] = [set() for _ in graph.node]
    indegree = [0] * len(graph.node)
    for i, node in enumerate(graph.node):
        for src in {producer[name] for name in node.input if name in producer}:
            consumers[src].add(i)
            indegree[i] += 1
    ready = [i for i, d in enumerate(indegree) if d == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for j in consumers[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
    if done < len(graph.node):
        stuck = [one_line(graph.node[i].name or graph.node[i].op_type, 40) for i, d in enumerate(indegree) if d > 0]
        shown = ", ".join(f"'{n}'" for n in stuck[:3]) + (", ..." if len(stuck) > 3 else "")
        raise source.fail(f"{where} has a cycle through nodes {shown}")


def check_function_recursion(model: onnx.ModelProto, source: _Source) -> None:
    """Model-local functions must not call themselves, directly or through others."""
    key = lambda domain, name, overload: (domain, name, overload)  # noqa: E731
    functions = {key(f.domain, f.name, f.overload): f for f in model.functions}
    calls = {k: {key(n.domain, n.op_type, n.overload) for n in f.node} & functions.keys() for k, f in functions.items()}
    state: dict[tuple, int] = {}   # 1 = on the current path, 2 = finished
    for start in functions:
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(calls[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                raise source.fail(f"model-local function '{one_line(nxt[0])}::{one_line(nxt[1])}' calls itself "
                                  "(recursive functions are refused)")
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(calls[nxt])))


# ---------------------------------------------------------------------------------------------- tensors
_PACKED_BITS = {getattr(TensorProto, n): b for n, b in
                (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2)) if hasattr(TensorProto, n)}
_WIDE_FIELDS = {TensorProto.FLOAT: ("float_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
                TensorProto.DOUBLE: ("double_data", 1), TensorProto.COMPLEX128: ("double_data", 2),
                TensorProto.INT64: ("int64_data", 1), TensorProto.UINT32: ("uint64_data", 1),
                TensorProto.UINT64: ("uint64_data", 1), TensorProto.STRING: ("string_data", 1)}


def element_bits(data_type: int) -> int | None:
    """Bits per element of a fixed-size ONNX dtype; None for STRING or an unknown dtype."""
    if data_type in _PACKED_BITS:
        return _PACKED_BITS[data_type]
    if data_type in (TensorProto.UNDEFINED, TensorProto.STRING):
        return None
    try:
        return 8 * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except Exception:  # noqa: BLE001 - unknown enum values raise KeyError or ValueError by onnx version
        return None


def dtype_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type)
    except ValueError:
        return f"#{data_type}"


def expected_bytes(tensor: TensorProto) -> int:
    return math.ceil(math.prod(tensor.dims) * element_bits(tensor.data_type) / 8)


def typed_value_count(tensor: TensorProto) -> tuple[int, int]:
    """(values stored in the typed field, values that field needs for the declared shape)."""
    n = math.prod(tensor.dims)
    field, per_element = _WIDE_FIELDS.get(tensor.data_type, ("int32_data", 1))
    if tensor.data_type in _PACKED_BITS:   # packed into one byte per int32 entry
        return len(tensor.int32_data), math.ceil(n * _PACKED_BITS[tensor.data_type] / 8)
    return len(getattr(tensor, field)), n * per_element


def all_tensors(model: onnx.ModelProto) -> Iterator[tuple[TensorProto, str]]:
    """Every stored tensor (initializers, sparse parts, attribute tensors anywhere) with a label."""
    for graph, _where in all_graphs(model):
        if isinstance(graph, onnx.GraphProto):
            for t in graph.initializer:
                yield t, f"initializer '{one_line(t.name)}'"
            for s in graph.sparse_initializer:
                yield s.values, f"sparse initializer '{one_line(s.values.name)}' values"
                yield s.indices, f"sparse initializer '{one_line(s.values.name)}' indices"
        for node in graph.node:
            for attr in node.attribute:
                label = f"tensor in attribute '{one_line(attr.name, 40)}' of node '{one_line(node.name, 60)}'"
                if attr.HasField("t"):
                    yield attr.t, label
                for t in attr.tensors:
                    yield t, label
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values, label
                    yield attr.sparse_tensor.indices, label


def check_tensors(model: onnx.ModelProto, source: _Source) -> list[tuple[TensorProto, str]]:
    """Check every stored tensor's declaration and inline data; return the external ones, unchecked yet."""
    external = []
    for graph, _ in all_graphs(model):
        for sparse in getattr(graph, "sparse_initializer", []):
            check_declared_shape(list(sparse.dims), f"sparse initializer '{one_line(sparse.values.name)}'", source)
    for tensor, label in all_tensors(model):
        check_declared_shape(list(tensor.dims), label, source)
        if tensor.data_location == TensorProto.EXTERNAL:
            source.require(element_bits(tensor.data_type) is not None,
                           f"{label} has data type {dtype_name(tensor.data_type)}, which cannot be stored externally")
            external.append((tensor, label))
        else:
            check_inline_data(tensor, label, source)
    return external


def check_declared_shape(dims: list[int], label: str, source: _Source) -> None:
    source.require(all(d >= 0 for d in dims), f"{label} declares a negative dimension in shape {dims[:8]}")
    n = math.prod(dims)
    source.require(n <= MAX_ELEMENTS, f"{label} declares {n} elements, over the limit of 2**31")


def check_inline_data(tensor: TensorProto, label: str, source: _Source) -> None:
    bits = element_bits(tensor.data_type)
    source.require(bits is not None or tensor.data_type == TensorProto.STRING,
                   f"{label} has an unknown data type {dtype_name(tensor.data_type)}")
    if tensor.HasField("raw_data"):
        source.require(bits is not None, f"{label} stores strings as raw data")
        need = expected_bytes(tensor)
        source.require(len(tensor.raw_data) == need,
                       f"{label} holds {len(tensor.raw_data)} bytes of raw data, its shape {list(tensor.dims)} "
                       f"of {dtype_name(tensor.data_type)} needs {need}")
        return
    have, need = typed_value_count(tensor)
    source.require(have == need, f"{label} holds {have} values, its shape {list(tensor.dims)} "
                                 f"of {dtype_name(tensor.data_type)} needs {need}")


def check_graph_input_shapes(graph: onnx.GraphProto, source: _Source) -> None:
    for vi in graph.input:
        if not vi.type.HasField("tensor_type"):
            continue
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
        check_declared_shape(dims, f"graph input '{one_line(vi.name)}'", source)


# ---------------------------------------------------------------------------------------------- external data
def external_info(tensor: TensorProto, label: str, source: _Source) -> dict[str, str]:
    info: dict[str, str] = {}
    for entry in tensor.external_data:
        source.require(
            entry.key in EXTERNAL_KEYS,
            f"{label} has an unknown external data key '{one_line(entry.key, 40)}'",
        )
        info[entry.key] = entry.value
    return info


def external_int(info: dict[str, str], key: str, label: str, source: _Source) -> int | None:
    if key not in info:
        return None
    try:
        value = int(info[key])
    except ValueError:
        raise source.fail(f"{label} has external data {key} '{one_line(info[key], 40)}', not an integer") from None
    source.require(value >= 0, f"{label} has a negative external data {key} {value}")
    return value


def resolve_external_location(location: str, label: str, source: _Source) -> str:
    """The real path of `location`, refused unless it stays inside the model's folder."""
    source.require(source.folder is not None,
                   f"{label} uses external data, but the model was given in memory without a folder")
    source.require(location != "", f"{label} uses external data without a location")
    source.require("\0" not in location, f"{label} has an external data location with a NUL character")
    shown = one_line(location, 80)
    source.require(not os.path.isabs(location) and not location.startswith(("\\", "/")) and ":" not in location,
                   f"{label} has an absolute external data location '{shown}'")
    folder = os.path.realpath(source.folder)
    resolved = os.path.realpath(os.path.join(folder, location))
    source.require(os.path.commonpath([folder, resolved]) == folder and resolved != folder,
                   f"{label} has external data location '{shown}' escaping the model's folder")
    source.require(not os.path.islink(os.path.join(folder, location)),
                   f"{label} has external data location '{shown}', a symbolic link (onnx refuses those)")
    return resolved


def check_external_tensor(tensor: TensorProto, label: str, source: _Source) -> int:
    """Refuse the external reference unless it is safe and the file long enough; return the byte count."""
    info = external_info(tensor, label, source)
    location = info.get("location", "")
    resolved = resolve_external_location(location, label, source)
    shown = one_line(location, 80)
    try:
        st = os.stat(resolved)
    except OSError:
        raise source.fail(f"{label} has external data file '{shown}', which does not exist") from None
    source.require(stat.S_ISREG(st.st_mode), f"{label} has external data '{shown}', which is not a regular file")
    offset = external_int(info, "offset", label, source) or 0
    length = external_int(info, "length", label, source)
    need = expected_bytes(tensor)
    source.require(length is None or length == need,
                   f"{label} has external data length {length}, its shape {list(tensor.dims)} of "
                   f"{dtype_name(tensor.data_type)} needs {need}")
    source.require(offset + need <= st.st_size,
                   f"{label} needs bytes {offset}..{offset + need} of '{shown}', which has only {st.st_size}")
    return need


def load_checked_external_data(external: list[tuple[TensorProto, str]], source: _Source) -> None:
    total = sum(check_external_tensor(t, label, source) for t, label in external)
    source.require(total <= MAX_FILE_BYTES, f"external data totals {total} bytes, over the {MAX_FILE_BYTES} byte limit")
    for tensor, label in external:
        need = expected_bytes(tensor)
        info = external_info(tensor, label, source)
        if "length" not in info:   # read exactly the tensor's bytes, never "to the end of the file"
            tensor.external_data.add(key="length", value=str(need))
        try:
            load_external_data_for_tensor(tensor, source.folder)
        except Exception as exc:  # noqa: BLE001 - onnx raises ValueError, OSError or its own errors
            raise source.fail(f"{label}: onnx refused to load its external data: {printable_first_line(exc)}") from None
        source.require(len(tensor.raw_data) == need, f"{label} external data changed while it was read")


# ---------------------------------------------------------------------------------------------- checker
def run_onnx_checker(model: onnx.ModelProto, source: _Source) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError, InferenceError, ValueError (too large)
        raise source.fail(f"fails the ONNX checker: {printable_first_line(exc)}") from None


# ---------------------------------------------------------------------------------------------- ai.patvm
def check_patvm_functions(model: onnx.ModelProto, uses: list[QuantizerUse], source: _Source) -> None:
    """A shipped ai.patvm function must be PAQuantize and compute its definition: onnxruntime runs it,
    patvm does not (`patvm.onnx_format.function_check`)."""
    for function in model.functions:
        if function.domain != paquantize.DOMAIN:
            continue
        source.require(function.name == paquantize.OP_TYPE,
                       f"model-local function '{paquantize.DOMAIN}::{one_line(function.name)}' is not a patvm op")
        if not same_function_body(function, paquantize.paquantize_function()):
            problem = function_problem(model, with_input_ranks(model, uses))
            source.require(problem is None, problem or "")


def value_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """The rank of every value ONNX shape inference can tell (model-local functions inlined first); raises
    what onnx raises when it cannot infer."""
    inferred = onnx.shape_inference.infer_shapes(onnx.inliner.inline_local_functions(model), data_prop=True).graph
    return {vi.name: len(vi.type.tensor_type.shape.dim)
            for vi in [*inferred.value_info, *inferred.input, *inferred.output]
            if vi.type.tensor_type.HasField("shape")}


def with_input_ranks(model: onnx.ModelProto, uses: list[QuantizerUse]) -> list[QuantizerUse]:
    """`uses` with the rank of each node's input, where ONNX shape inference can tell it."""
    try:
        ranks = value_ranks(model)
    except Exception:  # noqa: BLE001 - an unknown rank is probed at several ranks instead
        return uses
    return [dataclasses.replace(use, rank=ranks.get(use.input_name)) for use in uses]


def same_function_body(a: onnx.FunctionProto, b: onnx.FunctionProto) -> bool:
    a, b = _without_docs(a), _without_docs(b)
    return a == b


def _without_docs(f: onnx.FunctionProto) -> onnx.FunctionProto:
    copy = onnx.FunctionProto()
    copy.CopyFrom(f)
    copy.ClearField("doc_string")
    for node in copy.node:
        node.ClearField("doc_string")
    return copy


def check_patvm_nodes(model: onnx.ModelProto, source: _Source) -> list[QuantizerUse]:
    """Every PAQuantize node's tables checked; returns the nodes with their tables."""
    for function in model.functions:
        for node in function.node:
            source.require(node.domain != paquantize.DOMAIN,
                           f"function '{one_line(function.name)}' uses {paquantize.DOMAIN}::{one_line(node.op_type)} "
                           "inside a function, where its tables cannot be initializers")
    uses: list[QuantizerUse] = []
    _check_patvm_nodes_in(model.graph, {}, set(), source, uses)
    return uses


def _check_patvm_nodes_in(graph: onnx.GraphProto, outer_inits: dict, outer_inputs: set, source: _Source,
                          uses: list[QuantizerUse]) -> None:
    inits = {**outer_inits, **{t.name: t for t in graph.initializer}}
    inputs = outer_inputs | {vi.name for vi in graph.input}
    for node in graph.node:
        if node.domain == paquantize.DOMAIN:
            uses.append(check_paquantize_node(node, inits, inputs, source))
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _check_patvm_nodes_in(sub, inits, inputs, source, uses)


def check_paquantize_node(node: onnx.NodeProto, inits: dict, graph_inputs: set, source: _Source) -> QuantizerUse:
    where = f"PAQuantize node '{one_line(node.name or (node.output[0] if node.output else '?'), 80)}'"
    source.require(node.op_type == paquantize.OP_TYPE,
                   f"node '{one_line(node.name)}' uses unknown op {paquantize.DOMAIN}::{one_line(node.op_type)}")
    source.require(len(node.input) == 3 and len(node.output) == 1,
                   f"{where} needs 3 inputs (X, thresholds, levels) and 1 output, got {len(node.input)} and "
                   f"{len(node.output)}")
    tables = [paquantize_table(node.input[i], role, where, inits, graph_inputs, source)
              for i, role in ((1, "thresholds"), (2, "levels"))]
    try:
        validate_staircase(tables[0], tables[1], where=where)
    except PatvmError as exc:
        raise source.fail(str(exc)) from None
    return QuantizerUse(where, node.input[0], *tables, rank=None)


def paquantize_table(name: str, role: str, where: str, inits: dict, graph_inputs: set, source: _Source) -> np.ndarray:
    shown = one_line(name, 80)
    source.require(name in inits, f"{where}: {role} '{shown}' must be an initializer (a constant)")
    source.require(name not in graph_inputs,
                   f"{where}: {role} '{shown}' are also a graph input, so a caller could replace them")
    tensor = inits[name]
    source.require(tensor.data_type == TensorProto.FLOAT,
                   f"{where}: {role} must be float32, got {dtype_name(tensor.data_type)}")
    return numpy_helper.to_array(tensor)
