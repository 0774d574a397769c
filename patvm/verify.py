"""Check a compiled model against a reference executor on the same ONNX: onnxruntime, or qonnx's executor
for QONNX (Brevitas) models, which onnxruntime cannot run."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the float tolerance rule (`patvm run --verify`, the fuzzer's float graphs): an element is off when it
# differs from the reference by more than TOLERANCE of the reference output's range
TOLERANCE = 1e-3


def fraction_off(diff: np.ndarray, span: float) -> float:
    """The fraction of elements whose |difference| `diff` exceeds TOLERANCE of the output range `span`."""
    return float(np.mean(diff > TOLERANCE * span))


@dataclass(frozen=True)
class Comparison:
    max_abs_diff: float
    output_range: float
    fraction_off: float          # elements off by more than 1e-3 of the reference output's range
    top1_agreement: float        # over the batch (argmax over all but the first axis)
    reference: str = "onnxruntime"

    def summary(self) -> str:
        return (f"vs {self.reference}: max |diff| {self.max_abs_diff:.3g} (output range {self.output_range:.3g}), "
                f"{100 * self.fraction_off:.3f}% of elements off by > 1e-3 of range, "
                f"top-1 agreement {100 * self.top1_agreement:.1f}%")


def onnxruntime_outputs(model_or_path, inputs: dict) -> list[np.ndarray]:
    from patvm.onnx_format.session import onnxruntime_session
    from patvm.onnx_format.validate import load_model
    return onnxruntime_session(load_model(model_or_path)).run(None, inputs)


def reference_name(model) -> str:
    from patvm.frontends.qonnx import is_qonnx
    return "qonnx's executor" if is_qonnx(model) else "onnxruntime"


def reference_outputs(model_or_path, inputs: dict) -> list[np.ndarray]:
    """The model's outputs from its reference executor (reference_name)."""
    from patvm.frontends.qonnx import is_qonnx
    from patvm.frontends.qonnx import reference_outputs as qonnx_outputs
    from patvm.onnx_format.validate import load_model
    model = load_model(model_or_path)
    return qonnx_outputs(model, inputs) if is_qonnx(model) else onnxruntime_outputs(model, inputs)


def compare_outputs(got: np.ndarray, want: np.ndarray, reference: str = "onnxruntime") -> Comparison:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    span = float(want.max() - want.min()) if want.size else 0.0
    diff = np.abs(got - want)
    batch = want.shape[0] if want.ndim > 1 else 1
    top1 = np.mean(np.argmax(got.reshape(batch, -1), 1) == np.argmax(want.reshape(batch, -1), 1))
    return Comparison(float(diff.max()) if diff.size else 0.0, span, fraction_off(diff, span), float(top1), reference)


def compare_with_onnxruntime(
    model_or_path, x: np.ndarray, output: np.ndarray, input_name: str | None = None
) -> Comparison:
    from patvm.compiler.importer import graph_inputs
    from patvm.onnx_format.validate import load_model
    model = load_model(model_or_path)
    name = input_name or graph_inputs(model)[0].name
    return compare_outputs(output, reference_outputs(model, {name: x})[0], reference_name(model))
