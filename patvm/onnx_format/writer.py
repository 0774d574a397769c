"""A small numpy -> ONNX writer for PA-ONNX graphs (used by the zoo, the torch exporter and the tests).

Every method appends one standard node (or one `ai.patvm.PAQuantize`) and returns its output name.
`model()` adds the PAQuantize function and runs the full ONNX checker.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from patvm.approx.staircase import Staircase
from patvm.files import atomic_write_bytes
from patvm.onnx_format import paquantize


class GraphWriter:
    def __init__(self, name: str = "patvm"):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counts: dict[str, int] = {}

    def fresh(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def constant(self, array: np.ndarray, prefix: str = "const") -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], prefix: str | None = None, domain: str = "", **attrs) -> str:
        out = self.fresh(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs))
        return out

    # ---- graph interface
    def input(self, name: str, shape: list[int], dtype=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def output(self, value: str, shape: list[int] | None = None, name: str = "output") -> str:
        """Mark `value` as a graph output; its shape is inferred when not given."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}_identity"))
        self.outputs.append((name, shape))
        return name

    # ---- layers
    def pa_quantize(self, x: str, staircase: Staircase) -> str:
        t = self.constant(staircase.thresholds, "thresholds")
        lv = self.constant(staircase.levels, "levels")
        return self.node(paquantize.OP_TYPE, [x, t, lv], "paq", domain=paquantize.DOMAIN)

    def conv(self, x: str, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1, pad: int = 0,
             group: int = 1, dilation: int = 1) -> str:
        w = np.asarray(weight, np.float32)
        args = [x, self.constant(w, "conv_w")]
        if bias is not None:
            args.append(self.constant(np.asarray(bias, np.float32), "conv_b"))
        return self.node("Conv", args, "conv", kernel_shape=list(w.shape[2:]), strides=[stride, stride],
                         pads=[pad] * 4, group=group, dilations=[dilation, dilation])

    def gemm(self, x: str, weight: np.ndarray, bias: np.ndarray | None = None) -> str:
        """y = x @ weight.T + bias, weight [out, in] (torch Linear layout)."""
        args = [x, self.constant(np.asarray(weight, np.float32), "fc_w")]
        if bias is not None:
            args.append(self.constant(np.asarray(bias, np.float32), "fc_b"))
        return self.node("Gemm", args, "gemm", transB=1)

    def matmul(self, x: str, weight: np.ndarray) -> str:
        """y = x @ weight, weight [in, out]."""
        return self.node("MatMul", [x, self.constant(np.asarray(weight, np.float32), "mm_w")], "matmul")

    def batchnorm(self, x: str, scale, bias, mean, var, eps: float = 1e-5) -> str:
        args = [x] + [self.constant(np.asarray(a, np.float32), p) for a, p in
                      ((scale, "bn_scale"), (bias, "bn_bias"), (mean, "bn_mean"), (var, "bn_var"))]
        return self.node("BatchNormalization", args, "bn", epsilon=float(eps))

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], "relu")

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b], "add")

    def concat(self, xs: list[str], axis: int = 1) -> str:
        return self.node("Concat", list(xs), "concat", axis=axis)

    def maxpool(self, x: str, kernel: int, stride: int, pad: int = 0) -> str:
        return self.node("MaxPool", [x], "maxpool", kernel_shape=[kernel, kernel], strides=[stride, stride],
                         pads=[pad] * 4)

    def avgpool(self, x: str, kernel: int, stride: int, pad: int = 0) -> str:
        return self.node("AveragePool", [x], "avgpool", kernel_shape=[kernel, kernel], strides=[stride, stride],
                         pads=[pad] * 4)

    def global_avgpool(self, x: str) -> str:
        return self.node("GlobalAveragePool", [x], "gap")

    def flatten(self, x: str) -> str:
        return self.node("Flatten", [x], "flatten", axis=1)

    # ---- result
    def model(self, check: bool = True) -> onnx.ModelProto:
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in self.outputs]
        graph = helper.make_graph(self.nodes, self.name, self.inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=paquantize.opset_imports(), producer_name="patvm")
        model.ir_version = 10
        paquantize.attach_function(model)
        if any(s is None for _, s in self.outputs):
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
            model.graph.ClearField("output")
            model.graph.output.extend(inferred.graph.output)
        if check:
            onnx.checker.check_model(model, full_check=True)
        return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write an ONNX model atomically."""
    atomic_write_bytes(path, model.SerializeToString())
