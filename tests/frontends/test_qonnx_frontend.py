"""Hand-built QONNX graphs: each op of the frontend against qonnx's executor, the canonical form, the
one-line errors for what patvm cannot reproduce, and `patvm run --verify` through qonnx's executor."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("qonnx", reason="the QONNX tests need qonnx's executor (pip install qonnx)")

import patvm
from patvm.errors import ModelError
from patvm.frontends.qonnx import is_qonnx, reference_outputs, to_canonical
from patvm.verify import compare_outputs

QONNX = "qonnx.custom_op.general"
FINN = "finn.custom_op.general"
F32 = np.float32


class Graph:
    """A tiny QONNX graph builder."""

    def __init__(self, shape=(1, 8, 6, 6)):
        self.shape = shape
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, value, dtype=F32) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op, inputs, domain="", **attrs) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}{self.count}", domain=domain, **attrs))
        return out

    def quant(self, x, scale, bits, signed=1, narrow=0, zero=0.0, rounding="ROUND", domain=QONNX) -> str:
        return self.node("Quant", [x, self.const(scale), self.const(zero), self.const(bits)], domain,
                         signed=signed, narrow=narrow, rounding_mode=rounding)

    def model(self, out, out_shape) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "qonnx_test",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX, 2),
                                                 helper.make_opsetid(FINN, 1)])


def conv_weight(rng, o, c, k=3):
    return rng.uniform(-1, 1, (o, c, k, k)).astype(F32)


def two_layer_model(repeated_threshold: bool = False):
    """Quant (2-bit) -> Conv (2-bit weights, per-channel scale) -> BatchNorm -> MultiThreshold (finn, per
    channel) -> MaxPool -> Conv (BipolarQuant weights, per-channel scale) with bias."""
    rng = np.random.default_rng(0)
    g = Graph()
    a = g.quant("x", 0.25, 2, signed=0)
    scale = rng.uniform(0.2, 1.0, (8, 1, 1, 1)).astype(F32)
    w = g.quant(g.const(conv_weight(rng, 8, 8)), scale, 2, signed=1, narrow=1)
    y = g.node("Conv", [a, w], pads=[1, 1, 1, 1])
    y = g.node("BatchNormalization", [y] + [g.const(v) for v in (rng.uniform(0.5, 2, 8), rng.normal(0, 1, 8),
                                                                 rng.normal(0, 1, 8), rng.uniform(0.5, 2, 8))])
    thresholds = np.sort(rng.normal(0, 1, (8, 3)), axis=1)
    if repeated_threshold:                         # one step of two counts in channel 0
        thresholds[0, 1] = thresholds[0, 0]
    t = g.node("MultiThreshold", [y, g.const(thresholds)], FINN, out_scale=0.5, out_bias=-0.5, out_dtype="INT2")
    t = g.node("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2])
    w2 = g.node("BipolarQuant", [g.const(conv_weight(rng, 4, 8)), g.const(rng.uniform(0.1, 1, (4, 1, 1, 1)))], QONNX)
    out = g.node("Conv", [t, w2, g.const(rng.normal(0, 1, 4))], pads=[1, 1, 1, 1])
    return g.model(out, [1, 4, 3, 3])


def test_hand_built_model_matches_qonnx_and_is_bit_serial():
    model = two_layer_model()
    assert is_qonnx(model)
    compiled = patvm.compile(model, target="host", strategy="bit-serial")
    assert [layer["strategy"] for layer in compiled.layers] == ["bit-serial"] * 2, compiled.report()
    assert [layer["M"] for layer in compiled.layers] == [2, 1], compiled.report()   # per-channel scales: few planes
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = rng.uniform(-0.5, 1.2, (1, 8, 6, 6)).astype(F32)
        want = reference_outputs(model, {"x": x})[0]
        c = compare_outputs(compiled.run(x)[0], want)
        assert c.max_abs_diff <= 1e-5 * max(c.output_range, 1), c.summary()


def test_repeated_multithreshold_thresholds_stay_exact():
    model = two_layer_model(repeated_threshold=True)
    compiled = patvm.compile(model, target="host", strategy="bit-serial")
    # channel 0 has a step of two counts, so the steps differ between channels: fp32, with the reason
    assert compiled.layers[1]["strategy"] == "fp32" and "steps differ" in compiled.layers[1]["reason"]
    rng = np.random.default_rng(5)
    x = rng.uniform(-0.5, 1.2, (1, 8, 6, 6)).astype(F32)
    c = compare_outputs(compiled.run(x)[0], reference_outputs(model, {"x": x})[0])
    assert c.max_abs_diff <= 1e-5 * max(c.output_range, 1), c.summary()


def test_canonical_form():
    canonical = to_canonical(two_layer_model())
    ops = [n.op_type for n in canonical.graph.node]
    # quantizers are PAQuantize, scales follow the convs, the BatchNorm is in the next quantizer's thresholds,
    # the MaxPool runs before that quantizer
    assert ops == ["PAQuantize", "Conv", "Mul", "MaxPool", "PAQuantize", "Conv", "Mul", "Add"]
    assert {o.domain for o in canonical.opset_import} == {"", "ai.patvm"}
    inits = {t.name: numpy_helper.to_array(t) for t in canonical.graph.initializer}
    convs = [n for n in canonical.graph.node if n.op_type == "Conv"]
    assert set(np.unique(inits[convs[0].input[1]])) == {-1.0, 0.0, 1.0}
    assert set(np.unique(inits[convs[1].input[1]])) == {-1.0, 1.0}
    assert [i.name for i in canonical.graph.input] == ["x"]


def single_quant_model(**kwargs) -> onnx.ModelProto:
    g = Graph((1, 4, 5, 5))
    out = g.quant("x", **kwargs)
    return g.model(out, [1, 4, 5, 5])


@pytest.mark.parametrize("kwargs,message", [
    (dict(scale=0.5, bits=2, rounding="STOCHASTIC"), "rounding_mode 'STOCHASTIC' is not implemented"),
    (dict(scale=0.5, bits=1, signed=0, narrow=1), "signed/narrow inconsistent"),
    (dict(scale=0.5, bits=9), "more than the 256"),
    (dict(scale=0.5, bits=2.5), "bit width must be one integer"),
    (dict(scale=-0.5, bits=2), "scale must be finite and > 0"),
    (dict(scale=0.5, bits=2, signed=2), "signed=2 must be 0 or 1"),
    (dict(scale=[[[[0.5]], [[1.0]], [[2.0]]]], bits=2), "3 per-channel parameters for 4 channels"),
    (dict(scale=[0.5, 1.0, 2.0, 4.0, 8.0], bits=2), "vary along an axis other than the channel axis 1"),
])
def test_bad_quantizers_are_one_line_errors(kwargs, message):
    with pytest.raises(ModelError) as err:
        patvm.compile(single_quant_model(**kwargs), target="host")
    text = str(err.value)
    assert message in text and "Quant node 'quant" in text and "\n" not in text


def test_non_constant_scale_is_an_error():
    model = single_quant_model(scale=0.5, bits=2)
    scale = model.graph.node[0].input[1]
    model.graph.input.append(helper.make_tensor_value_info(scale, TensorProto.FLOAT, []))
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == scale))
    with pytest.raises(ModelError, match="scale 'c1' is not a constant"):
        patvm.compile(model, target="host")


def test_unsupported_qonnx_op_is_an_error():
    g = Graph((1, 4))
    out = g.node("FloatQuant", ["x"], QONNX)
    with pytest.raises(ModelError, match="FloatQuant node 'floatquant1': QONNX op 'FloatQuant' is not supported"):
        patvm.compile(g.model(out, [1, 4]), target="host")


def test_eight_bit_quantizer_stays_fp32_with_a_reason():
    rng = np.random.default_rng(3)
    g = Graph((1, 4, 5, 5))
    a = g.quant("x", 2.0 ** -7, 8)
    w = g.node("BipolarQuant", [g.const(conv_weight(rng, 4, 4)), g.const(1.0)], QONNX)
    out = g.node("Conv", [a, w], pads=[1, 1, 1, 1])
    model = g.model(out, [1, 4, 5, 5])
    compiled = patvm.compile(model, target="host", strategy="bit-serial")
    assert compiled.layers[0]["strategy"] == "fp32"
    assert "256 activation levels" in compiled.layers[0]["reason"]
    x = rng.uniform(-1, 1, (1, 4, 5, 5)).astype(F32)
    c = compare_outputs(compiled.run(x)[0], reference_outputs(model, {"x": x})[0])
    assert c.max_abs_diff <= 1e-5 * c.output_range, c.summary()


def test_cli_run_verify_uses_qonnx(tmp_path):
    model = two_layer_model()
    path, x = tmp_path / "m.onnx", tmp_path / "x.npy"
    onnx.save(model, path)
    np.save(x, np.random.default_rng(4).uniform(-0.5, 1.2, (1, 8, 6, 6)).astype(F32))
    out = subprocess.run([sys.executable, "-m", "patvm", "run", str(path), "--input", str(x), "--verify"],
                         capture_output=True, text=True, check=True).stdout
    assert "vs qonnx's executor" in out and "top-1 agreement 100.0%" in out


def batchnorm_quant_model(relu: bool, bipolar: bool, channels: int = 6, positions: int = 64):
    """x [1, C, P, 1] -> BatchNormalization (negative and positive gamma) [-> Relu] -> Quant / BipolarQuant."""
    rng = np.random.default_rng(7)
    g = Graph((1, channels, positions, 1))
    gamma = rng.uniform(0.3, 2.0, channels) * np.where(np.arange(channels) % 2, -1, 1)
    y = g.node(
        "BatchNormalization",
        ["x"]
        + [
            g.const(v)
            for v in (
                gamma,
                rng.normal(0, 1, channels),
                rng.normal(0, 1, channels),
                rng.uniform(0.5, 2, channels),
            )
        ],
        epsilon=1e-4,
    )
    if relu:
        y = g.node("Relu", [y])
    if bipolar:
        out = g.node("BipolarQuant", [y, g.const(0.5)], QONNX)
    else:
        out = g.quant(y, 0.37, 2, signed=0 if relu else 1, narrow=0 if relu else 1)
    return g.model(out, [1, channels, positions, 1])


def test_onnxruntime_batchnorm_arithmetic_is_what_the_fold_assumes():
    from patvm.frontends.qonnx.arithmetic import FoldedBatchNorm
    from patvm.verify import onnxruntime_outputs
    rng = np.random.default_rng(8)
    g = Graph((1, 32, 64, 64))
    params = [rng.normal(0, 1, 32), rng.normal(0, 1, 32), rng.normal(0, 3, 32), rng.uniform(0.1, 5, 32)]
    out = g.node("BatchNormalization", ["x"] + [g.const(v) for v in params], epsilon=1e-4)
    x = rng.normal(0, 20, (1, 32, 64, 64)).astype(F32)
    want = onnxruntime_outputs(g.model(out, [1, 32, 64, 64]), {"x": x})[0]
    a, b = FoldedBatchNorm.coefficients(*[np.asarray(p, F32) for p in params], 1e-4)
    np.testing.assert_array_equal(x * a.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1), want)


@pytest.mark.parametrize("relu,bipolar", [(False, True), (False, False), (True, False)])
def test_batchnorm_folds_into_thresholds_exactly(relu, bipolar):
    model = batchnorm_quant_model(relu, bipolar)
    canonical = to_canonical(model)
    assert [n.op_type for n in canonical.graph.node] == ["Mul", "PAQuantize"]      # the sign of negative gammas
    inits = {t.name: numpy_helper.to_array(t) for t in canonical.graph.initializer}
    thresholds = inits[canonical.graph.node[1].input[1]]                              # [C, N], on sign * x
    sign = inits[canonical.graph.node[0].input[1]].reshape(-1, 1)
    # every threshold and its float neighbours, per channel, in the input's own sign
    probes = (
        np.concatenate(
            [thresholds, np.nextafter(thresholds, F32(-np.inf)), np.nextafter(thresholds, F32(np.inf))], 1
        )
        * sign
    )
    x = np.zeros((1, probes.shape[0], 64, 1), F32)
    x[0, :, :probes.shape[1], 0] = probes
    x[0, :, probes.shape[1]:, 0] = np.random.default_rng(9).normal(0, 3, (probes.shape[0], 64 - probes.shape[1]))
    got = patvm.compile(model, target="host").run(x)[0]
    np.testing.assert_array_equal(got, reference_outputs(model, {"x": x})[0])
