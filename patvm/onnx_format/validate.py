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

The structure, tensor and external-data checks are in `patvm.onnx_format.model_contents`, the message
helpers in `patvm.onnx_format.messages`.
"""
from __future__ import annotations

import dataclasses
import os
import stat

import numpy as np
import onnx
import onnx.inliner  # the submodule is not imported by `import onnx`
from onnx import TensorProto, numpy_helper

from patvm.approx.staircase import validate_staircase
from patvm.errors import ModelError, PatvmError
from patvm.onnx_format import paquantize
from patvm.onnx_format.function_check import QuantizerUse, function_problem
from patvm.onnx_format.messages import Source, one_line, printable_first_line
from patvm.onnx_format.model_contents import (
    MAX_FILE_BYTES,
    all_graphs,
    check_acyclic,
    check_function_recursion,
    check_graph_input_shapes,
    check_tensors,
    dtype_name,
    load_checked_external_data,
)

MIN_DEFAULT_OPSET = 13
PATVM_OPSET = paquantize.VERSION
DEFAULT_DOMAINS = ("", "ai.onnx")
PATH_LIMIT = 4096


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
        source = Source(f"model '{one_line(model.graph.name or 'in memory')}'", folder)
    elif isinstance(path_or_model, (str, os.PathLike)):
        path = os.fspath(path_or_model)
        source = Source(
            one_line(path, PATH_LIMIT), os.path.dirname(os.path.abspath(path)) if _is_plain(path) else None
        )
        model = parse_model(read_model_bytes(path, source), source)
    else:
        raise ModelError(f"expected a model path or an onnx.ModelProto, got {type(path_or_model).__name__}")
    check_model_proto(model, source)
    return model


def _is_plain(path: str) -> bool:
    return "\0" not in path


def check_model_proto(model: onnx.ModelProto, source: Source) -> None:
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
def read_model_bytes(path: str, source: Source) -> bytes:
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


def stat_model_file(path: str, source: Source) -> os.stat_result:
    source.require(_is_plain(path), "path contains a NUL character")
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise source.fail("no such file") from None
    except OSError as exc:
        raise source.fail(f"cannot access the file: {one_line(exc.strerror or exc)}") from None


def parse_model(data: bytes, source: Source) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - DecodeError, or RuntimeError from some protobuf backends
        raise source.fail(f"not an ONNX protobuf file (corrupt or truncated): {printable_first_line(exc)}") from None
    return model


# ---------------------------------------------------------------------------------------------- opsets
def check_opsets(model: onnx.ModelProto, source: Source) -> None:
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


def opset_versions(imports, where: str, source: Source) -> dict[str, int]:
    versions: dict[str, int] = {}
    for entry in imports:
        source.require(entry.domain not in versions, f"{where} imports domain '{one_line(entry.domain)}' twice")
        versions[entry.domain] = entry.version
    if paquantize.DOMAIN in versions:
        source.require(versions[paquantize.DOMAIN] == PATVM_OPSET,
                       f"{where} imports {paquantize.DOMAIN} opset {versions[paquantize.DOMAIN]}, "
                       f"patvm knows only version {PATVM_OPSET}")
    return versions


# ---------------------------------------------------------------------------------------------- checker
def run_onnx_checker(model: onnx.ModelProto, source: Source) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError, InferenceError, ValueError (too large)
        raise source.fail(f"fails the ONNX checker: {printable_first_line(exc)}") from None


# ---------------------------------------------------------------------------------------------- ai.patvm
def check_patvm_functions(model: onnx.ModelProto, uses: list[QuantizerUse], source: Source) -> None:
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


def check_patvm_nodes(model: onnx.ModelProto, source: Source) -> list[QuantizerUse]:
    """Every PAQuantize node's tables checked; returns the nodes with their tables."""
    for function in model.functions:
        for node in function.node:
            source.require(node.domain != paquantize.DOMAIN,
                           f"function '{one_line(function.name)}' uses {paquantize.DOMAIN}::{one_line(node.op_type)} "
                           "inside a function, where its tables cannot be initializers")
    uses: list[QuantizerUse] = []
    _check_patvm_nodes_in(model.graph, {}, set(), source, uses)
    return uses


def _check_patvm_nodes_in(graph: onnx.GraphProto, outer_inits: dict, outer_inputs: set, source: Source,
                          uses: list[QuantizerUse]) -> None:
    inits = {**outer_inits, **{t.name: t for t in graph.initializer}}
    inputs = outer_inputs | {vi.name for vi in graph.input}
    for node in graph.node:
        if node.domain == paquantize.DOMAIN:
            uses.append(check_paquantize_node(node, inits, inputs, source))
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _check_patvm_nodes_in(sub, inits, inputs, source, uses)


def check_paquantize_node(node: onnx.NodeProto, inits: dict, graph_inputs: set, source: Source) -> QuantizerUse:
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


def paquantize_table(name: str, role: str, where: str, inits: dict, graph_inputs: set, source: Source) -> np.ndarray:
    shown = one_line(name, 80)
    source.require(name in inits, f"{where}: {role} '{shown}' must be an initializer (a constant)")
    source.require(name not in graph_inputs,
                   f"{where}: {role} '{shown}' are also a graph input, so a caller could replace them")
    tensor = inits[name]
    source.require(tensor.data_type == TensorProto.FLOAT,
                   f"{where}: {role} must be float32, got {dtype_name(tensor.data_type)}")
    return numpy_helper.to_array(tensor)
