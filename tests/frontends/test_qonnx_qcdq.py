"""Low-bit QuantizeLinear -> Clip -> DequantizeLinear (QCDQ, Brevitas' export_onnx_qcdq) is recognised as
the same exact staircase as QONNX's Quant and compiles the same way; onnxruntime is the reference here."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import patvm
from patvm.approx.staircase import staircase_quantize
from patvm.frontends.qonnx import arithmetic as ar
from patvm.frontends.qonnx import has_low_bit_qcdq, to_canonical
from patvm.verify import compare_outputs

F32 = np.float32


def ort_run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]


def qcdq_model(scale, zero, lo, hi, dtype=np.int8, size=64) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array(scale, F32), "s"), numpy_helper.from_array(np.array(zero, dtype), "z"),
             numpy_helper.from_array(np.array(lo, dtype), "lo"), numpy_helper.from_array(np.array(hi, dtype), "hi")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("Clip", ["q", "lo", "hi"], ["c"]),
             helper.make_node("DequantizeLinear", ["c", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "qcdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scale,zero,lo,hi,dtype", [(1.0, 0, -1, 1, np.int8), (0.37, 0, -2, 1, np.int8),
                                                    (0.25, 0, 0, 3, np.uint8), (0.1, 2, 0, 7, np.uint8)])
def test_qcdq_staircase_equals_onnxruntime_on_midpoints(scale, zero, lo, hi, dtype):
    op = ar.LinearQuant(
        np.array(scale, F32), np.array(zero, dtype), lo, hi, np.array(scale, F32), np.array(zero, dtype)
    )
    thr, lv = ar.staircase_of(op, 1)
    mids = ((np.arange(lo - zero - 1, hi - zero + 1) + 0.5) * scale).astype(F32)
    base = np.concatenate([mids, thr[0]])
    x = np.concatenate([base, np.nextafter(base, F32(-np.inf)), np.nextafter(base, F32(np.inf)),
                        np.array([-np.inf, np.inf, 0.0, -0.0, 3e38, -3e38], F32)])
    want = ort_run(qcdq_model(scale, zero, lo, hi, dtype, x.size), {"x": x})
    np.testing.assert_array_equal(staircase_quantize(x, thr[0], lv[0]), want)


def test_qcdq_chain_becomes_paquantize_and_int8_qdq_stays():
    assert has_low_bit_qcdq(qcdq_model(0.5, 0, -2, 1))
    assert [n.op_type for n in to_canonical(qcdq_model(0.5, 0, -2, 1)).graph.node] == ["PAQuantize"]
    assert not has_low_bit_qcdq(qcdq_model(0.5, 0, -128, 127))          # int8: left as standard QDQ
    assert [n.op_type for n in to_canonical(qcdq_model(0.5, 0, -128, 127)).graph.node] == [
        "QuantizeLinear", "Clip", "DequantizeLinear"]


@pytest.mark.parametrize("name", ["tfc_2w2a", pytest.param("cnv_2w2a", marks=pytest.mark.slow)])
def test_brevitas_qcdq_export_compiles_like_qonnx(tmp_path, name):
    bn = pytest.importorskip("brevitas_nets", reason="the QONNX tests need brevitas, qonnx and onnxoptimizer")
    from brevitas.export import export_onnx_qcdq
    torch_model, shape = bn.bnn_pynq(name)
    path = tmp_path / f"{name}_qcdq.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_qcdq(torch_model, bn.torch.rand(shape), export_path=str(path), dynamo=False)
    compiled = patvm.compile(str(path), target="host")
    rest = compiled.layers[1:] if name.startswith("cnv") else compiled.layers
    assert all(layer["strategy"] == "bit-serial" and layer["M"] == 2 and layer["N"] == 2 for layer in rest), (
        compiled.report()
    )
    model = onnx.load(str(path))
    x = np.random.default_rng(0).random(shape).astype(F32)
    for want in (ort_run(model, {compiled.inputs[0]["name"]: x}), bn.torch_outputs(torch_model, x)):
        c = compare_outputs(compiled.run(x)[0], want)
        assert c.top1_agreement == 1.0 and c.max_abs_diff <= 1e-3 * c.output_range, c.summary()

