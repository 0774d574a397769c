"""The localizer: the first node of a failing graph whose output already differs from onnxruntime's."""
from __future__ import annotations

from patvm.testing.cases import FuzzCase
from patvm.testing.flips import with_outputs
from patvm.testing.oracle import onnxruntime_outputs, run_case


def first_divergence(case: FuzzCase, target: str = "host") -> str | None:
    """The first node (in graph order) whose output already differs: the place to look for the bug."""
    model = case.model
    names = [node.output[0] for node in model.graph.node if node.op_type != "Identity"]
    shapes = {n: list(v.shape) for n, v in zip(names, onnxruntime_outputs(with_outputs(model, names, {}), case.inputs))}
    for node in model.graph.node:
        name = node.output[0]
        if name not in shapes:
            continue
        probe = with_outputs(model, [name], shapes)
        sub = FuzzCase(case.seed, case.index, case.mode, probe, case.inputs, case.steps, case.strategy)
        outcome = run_case(sub, target)
        if not outcome.ok:
            return f"{node.op_type} '{name}': {outcome.status}: {outcome.detail}"
    return None
