"""A shipped `ai.patvm.PAQuantize` function is judged by what it computes, not by how it is written.

onnxruntime runs the model's own model-local function; patvm never reads it (it recognises the node by
domain and op type). So the two agree only if the function computes the format's definition,
`levels[k], k = #(thresholds <= x)`, NaN giving levels[0] (`patvm.approx.staircase`). Any body that does
is accepted, whoever wrote it. For every PAQuantize node the function runs in onnxruntime on a probe made
from that node's own tables and at that node's input rank:

  every threshold and its float32 neighbours, the midpoints between thresholds, values below the first
  and above the last, the largest finite floats, +-inf, NaN, -0.0 and +0.0 -- for every channel of a
  per-channel table, in a batch of two (the second reversed), channels on axis 1

and its output must equal the definition's exactly. All nodes go into one probe model (one onnxruntime
session). patvm's own body is known to compute the definition (tests/onnx_format/test_paquantize_ort.py)
and is not run again.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from patvm.approx.staircase import staircase_quantize
from patvm.onnx_format import paquantize

UNKNOWN_RANKS = (2, 3, 4)   # probed when shape inference cannot tell a node's input rank
BIG = np.finfo(np.float32).max
TINY = np.finfo(np.float32).tiny   # smallest normal
DENORMAL = np.float32(1e-45)


@dataclass(frozen=True)
class QuantizerUse:
    """One PAQuantize node with its (validated) tables and the rank of its input, if known."""
    where: str                 # "PAQuantize node 'name'" for messages
    input_name: str
    thresholds: np.ndarray     # [N] or [C, N] float32
    levels: np.ndarray         # [N+1] or [C, N+1] float32
    rank: int | None


@dataclass(frozen=True)
class Probe:
    use: QuantizerUse
    x: np.ndarray

    @property
    def expected(self) -> np.ndarray:
        return staircase_quantize(self.x, self.use.thresholds, self.use.levels, axis=1)


def channel_probe_values(thresholds: np.ndarray) -> np.ndarray:
    """The values one channel's staircase is checked on (float32, NaN included once)."""
    t = np.asarray(thresholds, np.float32)
    below = np.nextafter(t, np.float32(-np.inf))
    above = np.nextafter(t, np.float32(np.inf))
    midpoints = (t[:-1].astype(np.float64) + t[1:]) / 2
    ends = [float(t[0]) - 1.0, float(t[-1]) + 1.0]
    specials = [-np.inf, np.inf, -BIG, BIG, -TINY, TINY, -DENORMAL, DENORMAL, 0.0]
    finite = np.concatenate([t, below, above, midpoints.astype(np.float32), np.asarray(ends, np.float32),
                             np.asarray(specials, np.float32)])
    finite = np.unique(finite[~np.isnan(finite)])
    return np.concatenate([finite, np.asarray([-0.0, np.nan], np.float32)]).astype(np.float32)


def probe_input(thresholds: np.ndarray, rank: int) -> np.ndarray:
    """X of the given rank, channels on axis 1: [P, C] for rank 2, [2, C, P, 1, ...] above."""
    rows = [channel_probe_values(t) for t in (thresholds if thresholds.ndim == 2 else [thresholds] * 2)]
    width = max(len(r) for r in rows)
    table = np.stack([np.pad(r, (0, width - len(r)), mode="edge") for r in rows])   # [C, P]
    if rank == 2:
        return np.ascontiguousarray(table.T)
    batch = np.stack([table, table[:, ::-1]])                                          # [2, C, P]
    return np.ascontiguousarray(batch.reshape(batch.shape + (1,) * (rank - 3)))


def probes(uses: list[QuantizerUse]) -> list[Probe]:
    return [Probe(use, probe_input(use.thresholds, rank))
            for use in uses for rank in ((use.rank,) if use.rank else UNKNOWN_RANKS)]


def probe_model(model: onnx.ModelProto, checks: list[Probe]) -> onnx.ModelProto:
    """A model with one PAQuantize node per probe, the node's tables as initializers, `model`'s functions."""
    nodes, inputs, outputs, inits = [], [], [], []
    for i, probe in enumerate(checks):
        x, t, lv, y = f"x{i}", f"t{i}", f"l{i}", f"y{i}"
        nodes.append(helper.make_node(paquantize.OP_TYPE, [x, t, lv], [y], domain=paquantize.DOMAIN))
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, list(probe.x.shape)))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, None))
        inits += [numpy_helper.from_array(probe.use.thresholds, t), numpy_helper.from_array(probe.use.levels, lv)]
    graph = helper.make_graph(nodes, "paquantize_probe", inputs, outputs, inits)
    probe = helper.make_model(graph, opset_imports=list(model.opset_import), functions=list(model.functions))
    probe.ir_version = model.ir_version
    return probe


def first_difference(probe: Probe, got: np.ndarray) -> str | None:
    """None when `got` is the definition's output; else what differs, in words."""
    want = probe.expected
    if got.dtype != np.float32:
        return f"returns {got.dtype} instead of float32"
    if got.shape != want.shape:
        return (f"returns shape {list(got.shape)} for an input of shape {list(probe.x.shape)} "
                f"(expected {list(want.shape)})")
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    if same.all():
        return None
    index = tuple(int(i) for i in np.argwhere(~same)[0])
    channel = f", channel {index[1]}" if probe.use.thresholds.ndim == 2 else ""
    return (f"computes {float(got[index])!r} for input {float(probe.x[index])!r}{channel} (rank {probe.x.ndim}), "
            f"where the format's definition gives {float(want[index])!r}")


def function_problem(model: onnx.ModelProto, uses: list[QuantizerUse]) -> str | None:
    """None when the model's PAQuantize function computes the definition on every node's probe."""
    from patvm.onnx_format.messages import printable_first_line
    from patvm.onnx_format.session import onnxruntime_session, session_options
    checks = probes(uses)
    if not checks:
        return None
    name = f"the model's {paquantize.DOMAIN}::{paquantize.OP_TYPE} function"
    serialized = probe_model(model, checks).SerializeToString()
    try:
        session = onnxruntime_session(serialized, session_options(threads=1))
        results = session.run(None, {f"x{i}": probe.x for i, probe in enumerate(checks)})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        return f"{name} does not run in onnxruntime on the nodes' tables: {printable_first_line(exc)}"
    for probe, got in zip(checks, results):
        difference = first_difference(probe, np.asarray(got))
        if difference is not None:
            return (f"{probe.use.where}: {name} {difference}, so onnxruntime would compute something else "
                    "than patvm")
    return None
