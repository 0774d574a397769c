"""patvm's own legalisations (patvm.compiler.legalize): MaxPool's window geometry equals onnxruntime's
exactly (max is exact), and NaN is kept by ReLU and MaxPool (the NaN cases are in
tests/reliability/test_regressions.py)."""
import numpy as np
import pytest
from conftest import compiled_kernels, onnxruntime_run

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
    from patvm.compiler.pipeline import import_and_lower
    from patvm.targets import resolve_target
    g = GraphWriter("conv-bn-relu")
    x = g.input("x", [1, 4, 8, 8])
    rng = np.random.default_rng(0)
    y = g.node("BatchNormalization", [g.conv(x, rng.standard_normal((8, 4, 3, 3)).astype(np.float32), pad=1),
                                      *(g.constant(v.astype(np.float32), n) for v, n in
                                        ((rng.random(8) + 0.5, "s"), (rng.random(8), "b"), (rng.random(8), "m"),
                                         (rng.random(8) + 0.5, "v")))], "bn")
    g.output(g.relu(y), [1, 8, 8, 8])
    mod, _, _ = import_and_lower(g.model())
    names = [gv.name_hint for gv in prepare(mod, resolve_target("host")).functions]
    assert any("conv2d" in n and n.endswith("relu") for n in names), names


@pytest.mark.parametrize("attrs", POOLS[:4], ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_blocked_maxpool_between_convs_keeps_nan_and_the_layout(attrs):
    """conv(16 channels) -> MaxPool -> conv: the pool runs in the blocked layout (no transform around it)
    and keeps NaN: an identity 1x1 conv carries one NaN pixel into every channel, and every window
    holding it gives NaN; the rest equals onnxruntime exactly."""
    (kh, kw), (sh, sw) = attrs["kernel_shape"], attrs["strides"]
    top, left = attrs.get("pads", [0, 0, 0, 0])[:2]
    g = GraphWriter("blocked-pool")
    x = g.input("x", [1, 16, 10, 9])
    y = g.node("MaxPool", [g.conv(x, np.eye(16, dtype=np.float32).reshape(16, 16, 1, 1))], "pool", **attrs)
    g.output(g.conv(y, np.eye(16, dtype=np.float32).reshape(16, 16, 1, 1)), None)
    model = g.model()
    data = np.random.default_rng(1).standard_normal((1, 16, 10, 9)).astype(np.float32)
    compiled = patvm.compile(model, target="host", tuning_db=False)
    kernels = compiled_kernels(compiled)
    assert sum("layout_transform" in k for k in kernels) == 2, kernels   # the graph's input and output only
    want = onnxruntime_run(model, {"x": data})[0]
    assert np.array_equal(compiled.run(data)[0], want)
    data[0, 2, 4, 5] = np.nan
    got = compiled.run(data)[0]
    rows = [p for p in range(got.shape[2]) if p * sh - top <= 4 < p * sh - top + kh]
    cols = [q for q in range(got.shape[3]) if q * sw - left <= 5 < q * sw - left + kw]
    want[:, :, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = np.nan
    assert np.array_equal(got, want, equal_nan=True)
