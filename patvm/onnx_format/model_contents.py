"""What is inside a model, checked before the ONNX checker or the protobuf parser see it (patvm.onnx_format.
validate runs these): no cycles among nodes, no recursion among functions, tensors whose stored data matches
their declared dtype and shape, external data that stays inside the model's folder."""
from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_tensor

from patvm.onnx_format.messages import Source, one_line, printable_first_line

MAX_FILE_BYTES = 2 * 1024**3
MAX_ELEMENTS = 2**31
EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})


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


def check_acyclic(graph, where: str, source: Source) -> None:
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


def check_function_recursion(model: onnx.ModelProto, source: Source) -> None:
    """Model-local functions must not call themselves, directly or through others."""
    functions = {(f.domain, f.name, f.overload): f for f in model.functions}
    calls = {k: {(n.domain, n.op_type, n.overload) for n in f.node} & functions.keys() for k, f in functions.items()}
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


def check_tensors(model: onnx.ModelProto, source: Source) -> list[tuple[TensorProto, str]]:
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


def check_declared_shape(dims: list[int], label: str, source: Source) -> None:
    source.require(all(d >= 0 for d in dims), f"{label} declares a negative dimension in shape {dims[:8]}")
    n = math.prod(dims)
    source.require(n <= MAX_ELEMENTS, f"{label} declares {n} elements, over the limit of 2**31")


def check_inline_data(tensor: TensorProto, label: str, source: Source) -> None:
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


def check_graph_input_shapes(graph: onnx.GraphProto, source: Source) -> None:
    for vi in graph.input:
        if not vi.type.HasField("tensor_type"):
            continue
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
        check_declared_shape(dims, f"graph input '{one_line(vi.name)}'", source)


# ---------------------------------------------------------------------------------------------- external data
def external_info(tensor: TensorProto, label: str, source: Source) -> dict[str, str]:
    info: dict[str, str] = {}
    for entry in tensor.external_data:
        source.require(
            entry.key in EXTERNAL_KEYS,
            f"{label} has an unknown external data key '{one_line(entry.key, 40)}'",
        )
        info[entry.key] = entry.value
    return info


def external_int(info: dict[str, str], key: str, label: str, source: Source) -> int | None:
    if key not in info:
        return None
    try:
        value = int(info[key])
    except ValueError:
        raise source.fail(f"{label} has external data {key} '{one_line(info[key], 40)}', not an integer") from None
    source.require(value >= 0, f"{label} has a negative external data {key} {value}")
    return value


def resolve_external_location(location: str, label: str, source: Source) -> str:
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


def check_external_tensor(tensor: TensorProto, label: str, source: Source) -> int:
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


def load_checked_external_data(external: list[tuple[TensorProto, str]], source: Source) -> None:
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
