"""Phase 3, lower: rewrite every matched binary layer to call_tir of patvm's TE operators.

For a match, at compile time:
  weights  W_bar -> decompose_weights -> NW {0,1} planes, packed [K, K, NW, CW, O] uint64 (a constant of
           the module: about NW bits per weight), scales s_i and offset w0;
  input    thresholds -> a [C, NA] table for the packer; thermometer steps d_j; bottom level a0;
  scales   phi[i, j] = s_i * d_j; window_coef[j] = w0 * d_j; base_term = sum_c a0[c] * W_bar[o, c, :, :].
At run time: pack_activation_planes (once per quantizer, however many layers it feeds) then
bitserial_conv2d. The conv PrimFunc is marked out-elementwise-fusable so that Relax's FuseOps folds the
epilogue (bias, BatchNorm, residual add, ReLU) into it; patvm.compiler.fuse_packing then adds the next
layer's packer to that kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te
from tvm.relax.expr_functor import PyExprMutator, mutator

from patvm.approx.planes import decompose_weights
from patvm.compiler.match import LayerMatch, match_layer, static_shape
from patvm.compiler.ops.bitserial import ConvGeometry, bitserial_conv2d
from patvm.compiler.ops.packing import pack_activation_planes, pack_weight_planes
from patvm.compiler.strategy import StrategyPolicy
from patvm.compiler.workload import WorkloadKey

OP_PATTERN_OUT_ELEMWISE_FUSABLE = 4
OP_PATTERN_OPAQUE = 8
PATVM_KERNEL_ATTR = "patvm.kernel"


@dataclass
class LayerReport:
    index: int
    op: str
    strategy: str              # "bit-serial" or "fp32"
    reason: str = ""
    M: int | None = None       # weight planes
    N: int | None = None       # activation planes
    weight_kind: str = ""
    input_shape: tuple = ()
    weight_shape: tuple = ()
    output_shape: tuple = ()
    packed_weight_bytes: int = 0
    fp32_weight_bytes: int = 0
    workload: str = ""


@dataclass(frozen=True)
class BinaryLayerConstants:
    """Everything the bit-serial kernel needs, derived at compile time from one match."""

    thresholds: np.ndarray          # [C, NA] float32
    packed_weights: np.ndarray      # [K, K, NW, CW, O] uint64
    phi: np.ndarray                 # [NW, NA] float32
    window_coef: np.ndarray | None  # [NA] float32
    base_term: np.ndarray | None    # [O, K, K] float32
    weight_kind: str


def binary_layer_constants(match: LayerMatch) -> BinaryLayerConstants:
    stair, w_bar = match.staircase, match.weight
    channels = w_bar.shape[1]
    thresholds = np.ascontiguousarray(np.broadcast_to(stair.thresholds, (channels, stair.N))).astype(np.float32)
    steps = stair.thermometer_deltas()
    steps = steps[0] if steps.ndim == 2 else steps                 # equal over channels (checked)
    bottom = np.broadcast_to(stair.levels[..., 0].astype(np.float64), (channels,))
    wp = decompose_weights(w_bar)
    planes, scales = wp.planes, wp.scales
    if wp.count == 0:  # all weights equal: keep one empty plane so the kernel shape stays regular
        planes, scales = np.zeros((1,) + w_bar.shape, bool), np.zeros(1)
    phi = (scales[:, None] * steps[None, :]).astype(np.float32)
    window_coef = (wp.offset * steps).astype(np.float32) if wp.offset != 0 else None
    base_term = None
    if np.any(bottom != 0):
        base_term = np.einsum("c,ockl->okl", bottom, w_bar.astype(np.float64)).astype(np.float32)
    return BinaryLayerConstants(thresholds, pack_weight_planes(planes), phi, window_coef, base_term, wp.kind)


def _prim_func(args: list[te.Tensor], out: te.Tensor, pattern: int, kernel: str):
    """(PrimFunc, output shape) with patvm's attributes."""
    func = (
        te.create_prim_func(args + [out], index_dtype_override="int64")
        .without_attr("global_symbol")
        .with_attr("op_pattern", pattern)
        .with_attr(PATVM_KERNEL_ATTR, kernel)
    )
    return func, [int(s) for s in out.shape]


def make_pack_func(x_shape, thresholds_shape):
    X = te.placeholder(x_shape, "float32", "X")
    T = te.placeholder(thresholds_shape, "float32", "thresholds")
    return _prim_func([X, T], pack_activation_planes(X, T), OP_PATTERN_OPAQUE, "pack")


def make_conv_func(a_shape, consts: BinaryLayerConstants, geometry: ConvGeometry):
    A = te.placeholder(a_shape, "uint64", "A")
    W = te.placeholder(consts.packed_weights.shape, "uint64", "W")
    phi = te.placeholder(consts.phi.shape, "float32", "phi")
    args = [A, W, phi]
    wc = te.placeholder(consts.window_coef.shape, "float32", "window_coef") if consts.window_coef is not None else None
    bt = te.placeholder(consts.base_term.shape, "float32", "base_term") if consts.base_term is not None else None
    args += [t for t in (wc, bt) if t is not None]
    out = bitserial_conv2d(A, W, phi, geometry, wc, bt)
    return _prim_func(args, out, OP_PATTERN_OUT_ELEMWISE_FUSABLE, "bitserial_conv2d")


@mutator
class BinaryLayerRewriter(PyExprMutator):
    """Rewrites matched conv2d/matmul calls; records a LayerReport for every conv2d/matmul it sees."""

    def __init__(self, mod: tvm.IRModule, var2val: dict, policy: StrategyPolicy):
        super().__init__(mod)
        self.var2val = var2val
        self.policy = policy
        self.reports: list[LayerReport] = []
        self._packed: dict = {}      # quantizer output -> packed planes (pack once per quantizer)
        self._funcs: dict = {}       # PrimFunc cache: identical layer shapes share one kernel (and one tuning task)

    def _global(self, key, build, name):
        """(GlobalVar, output shape) of the kernel for `key`, built on first use."""
        if key not in self._funcs:
            func, out_shape = build()
            self._funcs[key] = (self.builder_.add_func(func, name), out_shape)
        return self._funcs[key]

    def _pack(self, match: LayerMatch, x4: relax.Expr, x_shape, thresholds: np.ndarray) -> relax.Expr:
        key = (match.quantized, x_shape)
        if key not in self._packed:
            gv, out = self._global(("pack", x_shape, thresholds.shape),
                                   lambda: make_pack_func(x_shape, thresholds.shape), "pa_pack_activation_planes")
            self._packed[key] = self.builder_.emit(
                relax.call_tir(gv, [x4, relax.const(thresholds)], relax.TensorType(out, "uint64")))
        return self._packed[key]

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in ("relax.nn.conv2d", "relax.matmul"):
            return call
        match = match_layer(call, self.var2val)
        report = LayerReport(index=len(self.reports), op="conv2d" if "conv" in call.op.name else "dense",
                             strategy="fp32", input_shape=static_shape(call.args[0]) or (),
                             output_shape=static_shape(call) or ())
        self.reports.append(report)
        if match is None:
            report.reason = "input is not a PA quantizer or weight is not a constant"
            return call
        report.weight_shape = match.weight.shape
        report.fp32_weight_bytes = int(match.weight.size * 4)
        report.N = match.staircase.N
        if match.reason is not None:
            report.reason = match.reason
            return call
        consts = binary_layer_constants(match)
        planes = int(consts.packed_weights.shape[2]) * match.staircase.N
        report.M = int(consts.packed_weights.shape[2])
        report.workload = workload_key(match)
        strategy, report.reason = self.policy.choose(report.workload, planes)
        if strategy != "bit-serial":
            return call
        return self._lower(match, consts, report)

    def _lower(self, match: LayerMatch, consts: BinaryLayerConstants, report: LayerReport) -> relax.Expr:
        x = match.x
        x_shape = static_shape(x)
        if match.kind == "dense":
            x_shape = (x_shape[0], x_shape[1], 1, 1)
            x = self.builder_.emit(relax.op.reshape(x, x_shape))
        packed = self._pack(match, x, x_shape, consts.thresholds)
        a_shape = tuple(int(s) for s in packed.ty.shape)
        geometry = ConvGeometry(match.stride, match.pad, int(match.weight.shape[2]))
        key = ("conv", a_shape, consts.packed_weights.shape, consts.phi.shape, geometry,
               consts.window_coef is not None, consts.base_term is not None)
        gv, out_shape = self._global(key, lambda: make_conv_func(a_shape, consts, geometry), "pa_bitserial_conv2d")
        args = [packed, relax.const(consts.packed_weights), relax.const(consts.phi)]
        args += [relax.const(c) for c in (consts.window_coef, consts.base_term) if c is not None]
        y = relax.call_tir(gv, args, relax.TensorType(out_shape, "float32"))
        if match.kind == "dense":
            y = relax.op.reshape(self.builder_.emit(y), (out_shape[0], out_shape[1]))
        report.strategy = "bit-serial"
        report.weight_kind = consts.weight_kind
        report.packed_weight_bytes = int(consts.packed_weights.nbytes + consts.phi.nbytes)
        return y


def workload_key(match: LayerMatch) -> str:
    """A layer's identity for measured strategy choices (patvm.compiler.workload), in its string form."""
    return str(WorkloadKey(match.kind, static_shape(match.x), tuple(int(d) for d in match.weight.shape),
                           match.stride, match.pad, len(np.unique(match.weight)), match.staircase.N))


def lower_binary_layers(mod: tvm.IRModule, policy: StrategyPolicy | None = None
                        ) -> tuple[tvm.IRModule, list[LayerReport]]:
    """Rewrite `main`; returns the new module (dead quantizer chains removed) and the per-layer report."""
    func = mod["main"]
    rewriter = BinaryLayerRewriter(mod, relax.analysis.get_var2val(func), policy or StrategyPolicy("bit-serial"))
    new_main = rewriter.visit_expr(func)
    rewriter.builder_.update_func(rewriter.builder_.get().get_global_var("main"), new_main)
    new_mod = relax.transform.DeadCodeElimination(["main"])(rewriter.builder_.get())
    return new_mod, rewriter.reports


@tvm.transform.module_pass(opt_level=0, name="patvm.LowerBinaryLayers")
class LowerBinaryLayers:
    """Phase 3 as a Relax module pass (`lower_binary_layers`); after it has run, `.reports` holds the
    per-layer report of the module it rewrote."""

    def __init__(self, policy: StrategyPolicy | None = None):
        self.policy = policy
        self.reports: list[LayerReport] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod, self.reports = lower_binary_layers(mod, self.policy)
        return mod
