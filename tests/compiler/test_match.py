"""Phase 2: what matches, what stays fp32 (with the reason in the report), and pack-once sharing."""
import numpy as np
from conftest import binary_layer_model, dyadic, onnxruntime_run

import patvm
from patvm.approx import Staircase
from patvm.compiler.pipeline import import_and_lower
from patvm.onnx_format import GraphWriter


def strategies(compiled):
    return [(layer["strategy"], layer["reason"]) for layer in compiled.layers]


def test_too_many_weight_values_stays_fp32_and_correct():
    model, x = binary_layer_model(C=8, O=4, weight_values=np.arange(-10, 10, dtype=np.float32) / 8)
    compiled = patvm.compile(model)
    (strategy, reason), = strategies(compiled)
    assert strategy == "fp32" and "distinct weight values" in reason
    np.testing.assert_allclose(compiled.run(x)[0], onnxruntime_run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def _quantized_conv_model(**conv_kwargs):
    rng = np.random.default_rng(2)
    g = GraphWriter()
    x = g.input("x", [1, 8, 9, 9])
    q = g.pa_quantize(x, Staircase(np.array([0.0, 0.5], np.float32), np.array([0.0, 0.5, 1.0], np.float32)))
    group = conv_kwargs.get("group", 1)
    w = rng.choice(np.array([-0.5, 0.0, 0.5], np.float32), size=(8, 8 // group, 3, 3))
    g.output(g.conv(q, w, **conv_kwargs))
    return g.model(), dyadic(rng, (1, 8, 9, 9))


def test_grouped_and_dilated_convs_stay_fp32_and_correct():
    for kwargs, why in ((dict(group=2, pad=1), "grouped"), (dict(dilation=2, pad=2), "dilated")):
        model, x = _quantized_conv_model(**kwargs)
        compiled = patvm.compile(model)
        (strategy, reason), = strategies(compiled)
        assert strategy == "fp32" and why in reason
        np.testing.assert_array_equal(compiled.run(x)[0], onnxruntime_run(model, {"x": x})[0])


def test_unquantized_conv_is_reported_fp32():
    rng = np.random.default_rng(3)
    g = GraphWriter()
    x = g.input("x", [1, 3, 8, 8])
    g.output(g.conv(x, dyadic(rng, (4, 3, 3, 3)), pad=1))
    compiled = patvm.compile(g.model())
    (strategy, reason), = strategies(compiled)
    assert strategy == "fp32" and "not a PA quantizer" in reason


def test_one_quantizer_feeding_two_layers_is_packed_once():
    """The ResNet downsampling block: the block input feeds the 3x3 conv and the 1x1 stride-2 conv."""
    rng = np.random.default_rng(4)
    g = GraphWriter()
    x = g.input("x", [2, 16, 8, 8])
    q = g.pa_quantize(x, Staircase(np.array([0.0, 0.5], np.float32), np.array([0.0, 0.5, 1.0], np.float32)))
    values = np.array([-0.5, 0.0, 0.5], np.float32)
    a = g.conv(q, rng.choice(values, size=(32, 16, 3, 3)), stride=2, pad=1)
    b = g.conv(q, rng.choice(values, size=(32, 16, 1, 1)), stride=2)
    g.output(g.add(a, b))
    model = g.model()
    mod, reports, _ = import_and_lower(model)
    script = mod["main"].script()
    assert script.count("pa_pack_activation_planes") == 1, script
    assert [r.strategy for r in reports] == ["bit-serial", "bit-serial"]
    xin = dyadic(rng, (2, 16, 8, 8))
    np.testing.assert_array_equal(patvm.compile(model).run(xin)[0], onnxruntime_run(model, {"x": xin})[0])


def test_identical_layer_shapes_share_one_kernel():
    rng = np.random.default_rng(5)
    g = GraphWriter()
    y = g.input("x", [1, 16, 8, 8])
    stair = Staircase(np.array([0.0], np.float32), np.array([0.0, 1.0], np.float32))
    for _ in range(3):
        y = g.relu(g.conv(g.pa_quantize(y, stair), rng.choice(np.array([-1.0, 0.0, 1.0], np.float32),
                                                               size=(16, 16, 3, 3)), pad=1))
    g.output(y)
    mod, reports, _ = import_and_lower(g.model())
    kernels = [gv.name_hint for gv, _ in mod.functions_items() if "bitserial" in gv.name_hint]
    assert len(reports) == 3 and len(kernels) == 1


def test_auto_strategy_keeps_large_MN_on_fp32_and_says_why():
    model, x = binary_layer_model(C=16, O=8, H=6, batch=1)          # M=4 planes x N=4 planes
    auto = patvm.compile(model, target="x86-avx2")                  # crossover 8 plane pairs
    (strategy, reason), = strategies(auto)
    assert strategy == "fp32" and "M*N=16" in reason
    forced = patvm.compile(model, target="x86-avx2", strategy="bit-serial")
    assert strategies(forced)[0][0] == "bit-serial"
    np.testing.assert_array_equal(auto.run(x)[0], forced.run(x)[0])
    small, _ = binary_layer_model(C=16, O=8, H=6, batch=1, weight_values=np.array([-0.5, 0.0, 0.5], np.float32))
    assert strategies(patvm.compile(small, target="x86-avx2"))[0][0] == "bit-serial"  # M=2 x N=4 = 8 pairs
