"""patvm's own legalisations (patvm.compiler.legalize): MaxPool's window geometry equals onnxruntime's
exactly (max is exact), and NaN is kept by ReLU and MaxPool (the NaN cases are in
tests/reliability/test_regressions.py)."""
import numpy as np
import pytest
from conftest import onnxruntime_run

import patvm
from patvm.onnx_format import GraphWriter

POOLS = [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),                  # ResNet's stem
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),                       # last window past the edge
    dict(kernel_shape=[2, 3], strides=[1, 2], pads=[0, 1, 1, 0], ceil_mode=1),    # asymmetric everything
    dict(kernel_shape=[2, 2], strides=[1, 1], dilations=[2, 2]),
]


@pytest.mark.parametrize("attrs", POOLS, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_maxpool_matches_onnxruntime(attrs):
    g = GraphWriter("pool")
    x = g.input("x", [2, 3, 10, 9])
    y = g.node("MaxPool", [x], "pool", **attrs)
    g.output(y, None)
    model = g.model()
    data = np.random.default_rng(0).standard_normal((2, 3, 10, 9)).astype(np.float32)
    # a window of -inf values gives -inf (TVM's own pooling gave -FLT_MAX). Away from the border: there
    # onnxruntime itself gives -FLT_MAX or -inf depending on which side the padding is
    data[0, 0, 3:6, 3:6] = -np.inf
    want = onnxruntime_run(model, {"x": data})[0]
    got = patvm.compile(model, target="host").run(data)[0]
    assert got.shape == want.shape and np.array_equal(got, want)


def test_relu_fuses_into_the_conv_before_it():
    """NaN-keeping ReLU is one elementwise op: FuseOps folds it (and BatchNorm) into the conv's kernel."""
    from patvm.compiler.build import prepare
    from patvm.compiler.pipeline import frontend
    from patvm.targets import resolve_target
    g = GraphWriter("conv-bn-relu")
    x = g.input("x", [1, 4, 8, 8])
    rng = np.random.default_rng(0)
    y = g.node("BatchNormalization", [g.conv(x, rng.standard_normal((8, 4, 3, 3)).astype(np.float32), pad=1),
                                      *(g.constant(v.astype(np.float32), n) for v, n in
                                        ((rng.random(8) + 0.5, "s"), (rng.random(8), "b"), (rng.random(8), "m"),
                                         (rng.random(8) + 0.5, "v")))], "bn")
    g.output(g.relu(y), [1, 8, 8, 8])
    mod, _, _ = frontend(g.model())
    names = [gv.name_hint for gv in prepare(mod, resolve_target("host")).functions]
    assert any("conv2d" in n and n.endswith("relu") for n in names), names
