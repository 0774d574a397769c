"""qonnx's executor (qonnx.core.onnx_exec.execute_onnx): the reference for QONNX models, which onnxruntime
cannot run (custom ops). Needs the optional `qonnx` package."""
from __future__ import annotations

import numpy as np
import onnx

from patvm.errors import PatvmError


def reference_outputs(model: onnx.ModelProto, inputs: dict) -> list[np.ndarray]:
    """The graph outputs, in order, as qonnx computes them."""
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes
    except ImportError as exc:
        raise PatvmError("checking a QONNX model needs qonnx's executor: pip install qonnx") from exc
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    wrapper = ModelWrapper(copy).transform(InferShapes())
    results = execute_onnx(wrapper, dict(inputs))
    return [np.asarray(results[o.name]) for o in wrapper.graph.output]
