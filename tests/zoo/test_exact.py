"""Exact mode of the zoo: dyadic parameters, a bit budget that holds, and onnxruntime giving the very same
logits whatever its summation order (thread count, graph optimisation level: Conv+BN fusion, NCHWc)."""
import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from patvm import cli, zoo
from patvm.errors import PatvmError
from patvm.onnx_format import is_paquantize
from patvm.zoo import exact as ex

SIZE = 32
BATCH = 4      # one build serves every test that asks for the same model (calibration ignores the batch)
BINARY_NAMES = [n for n in zoo.ZOO_NAMES if n.startswith(("pa-", "abc-"))]
TWIN_NAMES = [n for n in zoo.ZOO_NAMES if n not in BINARY_NAMES]
Level = ort.GraphOptimizationLevel


@functools.cache
def built(name: str, M: int = 4, N: int = 5, size: int = SIZE, exact: bool = True):
    return zoo.build_model(name, M=M, N=N, batch=BATCH, image_size=size, exact=exact)


def initializers(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def significant_bits(a) -> int:
    """Bits of the largest |value| / the common power of two of the tensor."""
    a = np.asarray(a, np.float64)
    if not np.any(a):
        return 0
    q = ex.quantum_exponent(a).min()
    return int(np.ceil(np.log2(np.abs(a).max() / 2.0 ** q + 1)))


def run_ort(model, x, level=Level.ORT_ENABLE_ALL, threads=1):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


# ---- the rounding helpers

def test_quantum_exponent():
    assert ex.quantum_exponent([1.0, 0.75, -0.375, 6.0, 2.0 ** -30, 3 * 2.0 ** 20]).tolist() == [0, -2, -3, 1, -30, 20]
    assert ex.quantum_exponent([0.0])[0] > 1000


def test_to_dyadic():
    x = np.array([0.3, -1.7, 0.01, 2.9])
    y = ex.to_dyadic(x, 3)                   # max 2.9 -> grid 2^-1, 2.9 -> 3.0
    assert y.dtype == np.float32 and y.tolist() == [0.5, -1.5, 0.0, 3.0]
    assert ex.to_dyadic([0.3, 5.0], 2, per_element=True).tolist() == [0.25, 4.0]
    assert ex.to_dyadic(np.zeros(3), 4).tolist() == [0, 0, 0]


def test_dyadic_ladder_keeps_order_signs_and_zero():
    alphas = np.array([-0.90, -0.88, -0.02, 0.01, 0.5, 0.51])
    r = ex.dyadic_ladder(alphas, 2)
    assert np.all(np.diff(r) > 0) and np.all(np.sign(r) == np.sign(alphas))
    assert significant_bits(r) <= 3
    levels = ex.dyadic_ladder(np.array([0.0, 0.1, 0.11, 1.3, 2.6]), 3)
    assert levels[0] == 0 and np.all(np.diff(levels) > 0) and significant_bits(levels) <= 3


def test_dyadic_bases():
    r = ex.dyadic_bases(np.array([0.3, 0.55, 0.01, -0.3]), 3)    # sum 1.16: grid 2^-2
    assert r.tolist() == [0.25, 0.5, 0.25, -0.25]                 # 0.01 is not rounded to 0


def test_batchnorm_params_are_exact():
    rng = np.random.default_rng(0)
    var = rng.uniform(0.01, 30, 64)
    var[3] = 0.0                                         # a dead channel
    gamma, beta, mean, v = ex.batchnorm_params(rng.uniform(0.5, 1.5, 64), rng.normal(0, 0.1, 64),
                                               rng.normal(0, 2, 64), var)
    k = np.log2(v) / 2
    assert np.array_equal(k, np.round(k))                # var = 4^k: sqrt exact
    assert all(significant_bits(g) <= ex.GAMMA_BITS for g in gamma) and np.all(gamma > 0)
    assert np.all(beta / ex.BETA_STEP == np.round(beta / ex.BETA_STEP))
    assert np.all(mean / (np.sqrt(v) * ex.MEAN_STEP) == np.round(mean / (np.sqrt(v) * ex.MEAN_STEP)))


# ---- exact models

@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_exact_mode_builds_every_zoo_name(name):
    model = built(name)
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    if name in TWIN_NAMES:      # no quantizer bounds a twin's sums: no claim made
        assert ex.EXACT_BITS_KEY not in props
    else:
        assert 10 < float(props[ex.EXACT_BITS_KEY]) <= ex.MANTISSA_BITS
    x = ex.dyadic_images(np.random.default_rng(1), (BATCH, 3, SIZE, SIZE))
    logits = run_ort(model, x)
    assert np.all(np.isfinite(logits)) and np.all(logits.std(axis=1) > 0.1)
    assert np.abs(logits[0] - logits[1]).max() > 0.1, "two different images give the same logits"


def test_exact_and_normal_models_share_the_graph():
    exact, normal = built("pa-resnet18", 2, 1), built("pa-resnet18", 2, 1, exact=False)
    assert [(n.op_type, list(n.input)) for n in exact.graph.node] == [
        (n.op_type, list(n.input)) for n in normal.graph.node
    ]
    assert not normal.metadata_props
    assert any(not np.array_equal(initializers(exact)[k], v) for k, v in initializers(normal).items())


BUILT = [("pa-resnet18", 8, 7), ("pa-mobilenet-v1", 2, 1), ("pa-densenet121", 4, 5), ("abc-resnet18", 3, 3)]


@pytest.mark.parametrize("name,M,N", BUILT)
def test_parameters_are_dyadic(name, M, N):
    model = built(name, M, N)
    weights = initializers(model)
    quantized = {n.output[0] for n in model.graph.node if is_paquantize(n)}
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = weights[node.input[1]]
            if node.input[0] in quantized:
                values = np.unique(w)
                # PA: M pieces and the zero piece; ABC: the zoo's sign bases are nested (shifted thresholds),
                # so M + 1 of the 2^M signed sums of the alphas occur
                assert len(values) == M + 1 and (0 in values or name.startswith("abc-")), node.name
                assert significant_bits(values) <= 8, node.name
            else:
                assert significant_bits(w) <= ex.FP_WEIGHT_BITS + 1, node.name
        elif node.op_type == "BatchNormalization":
            gamma, beta, mean, var = (weights[i].astype(np.float64) for i in node.input[1:])
            assert next(a.f for a in node.attribute if a.name == "epsilon") == 0.0
            std = np.sqrt(var)
            assert np.array_equal(std, 2.0 ** np.round(np.log2(std)))             # var = 4^k
            assert max(significant_bits(g) for g in gamma) <= ex.GAMMA_BITS
            for value, step in ((beta, ex.BETA_STEP), (mean, std * ex.MEAN_STEP)):
                assert np.array_equal(value / step, np.round(value / step)), node.name
        elif is_paquantize(node):
            levels = weights[node.input[2]]
            assert len(np.unique(levels)) == N + 1 and significant_bits(levels) <= ex.LEVEL_BITS + 3
            assert (levels[0] == 0) == name.startswith("pa-")


@pytest.mark.parametrize("name,M,N,size", [(*case, SIZE) for case in BUILT] + [("pa-resnet18", 2, 1, 64)])
def test_onnxruntime_bit_identical_across_threads_and_optimisation_levels(name, M, N, size):
    """Order independence: no fusion, Conv+BN fusion, NCHWc layouts, 1 or 2 threads -- the same bits."""
    model = built(name, M, N, size)
    x = ex.dyadic_images(np.random.default_rng(2), (BATCH, 3, size, size))
    reference = run_ort(model, x, Level.ORT_DISABLE_ALL, 1)
    assert np.all(np.std(reference, axis=1) > 0.1) and np.abs(reference[0] - reference[1]).max() > 0.1
    for level, threads in ((Level.ORT_ENABLE_BASIC, 1), (Level.ORT_ENABLE_ALL, 1), (Level.ORT_ENABLE_ALL, 2),
                           (Level.ORT_DISABLE_ALL, 2)):
        assert np.array_equal(run_ort(model, x, level, threads), reference), (level, threads)


def test_normal_models_are_not_order_independent():
    """What exact mode is for: the same comparison on the normal model flips thresholds and cascades."""
    model = built("pa-resnet18", 2, 1, exact=False)
    x = ex.dyadic_images(np.random.default_rng(2), (BATCH, 3, SIZE, SIZE))
    a, b = run_ort(model, x, Level.ORT_DISABLE_ALL), run_ort(model, x, Level.ORT_ENABLE_ALL)
    assert np.mean(np.abs(a - b) > 1e-3 * np.ptp(a)) > 0.01


class RecordingBudget(ex.BitBudget):
    """Keeps the grid of every conv / BatchNorm / add output, by value name."""

    def __init__(self):
        super().__init__()
        self.grids = {}

    def conv(self, grid, w, group, binary, what):
        self.grids[what] = out = super().conv(grid, w, group, binary, what)
        return out

    def batchnorm(self, grid, gamma, beta, mean, var, what):
        self.grids[what] = out = super().batchnorm(grid, gamma, beta, mean, var, what)
        return out

    def add(self, a, b, what):
        self.grids[what] = out = super().add(a, b, what)
        return out


@pytest.mark.parametrize("name,M,N", [("pa-mobilenet-v1", 8, 7), ("pa-densenet121", 2, 2), ("abc-resnet18", 1, 1)])
def test_activations_stay_inside_the_proven_grid(name, M, N, monkeypatch):
    """The bound is sound on real data: every conv / BN / add output of onnxruntime lies in [lo, hi] and
    is a multiple of 2^q, channel by channel."""
    budgets = []
    monkeypatch.setattr(ex, "BitBudget", lambda: budgets.append(RecordingBudget()) or budgets[-1])
    model = zoo.build_model(name, M=M, N=N, batch=BATCH, image_size=SIZE, exact=True)
    grids = budgets[0].grids
    assert len(grids) > 20
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in grids)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = Level.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = ex.dyadic_images(np.random.default_rng(3), (BATCH, 3, SIZE, SIZE))
    x[0] = ex.INPUT_BOUND            # the extremes of the input range too
    x[1] = -ex.INPUT_BOUND
    values = dict(zip([o.name for o in probe.graph.output], session.run(None, {"input": x})))
    for name_, grid in grids.items():
        v = values[name_].astype(np.float64)
        shape = (1, -1) + (1,) * (v.ndim - 2)
        assert np.all(v >= grid.lo.reshape(shape)) and np.all(v <= grid.hi.reshape(shape)), name_
        scaled = v * 2.0 ** -grid.q.astype(np.float64).reshape(shape)
        assert np.array_equal(scaled, np.round(scaled)), name_


def test_too_wide_for_24_bits_is_refused():
    with pytest.raises(PatvmError, match="exact mode cannot hold"):
        zoo.build_model("pa-resnet18", M=2, N=127, image_size=SIZE, exact=True)


def test_cli_zoo_exact(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert cli.main(["zoo", "pa-mobilenet-v1", "--M", "2", "--N", "1", "--image-size", str(SIZE), "--batch",
                     str(BATCH), "--exact", "-o", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    model = onnx.load(str(path))
    assert ex.EXACT_BITS_KEY in {p.key for p in model.metadata_props}
    assert model.SerializeToString() == built("pa-mobilenet-v1", 2, 1).SerializeToString()
