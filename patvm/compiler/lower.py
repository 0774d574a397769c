"""Phase 3, lower: rewrite every matched binary layer to call_tir of patvm's TE operators.

For a match, at compile time:
  weights  W_bar -> decompose_weights -> NW {0,1} planes, packed [K, K, NW, CW, O] uint64 (a constant of
           the module: about NW bits per weight), scales s_i; an offset w0 != 0 multiplies the activation
           planes' window counts (window_phi[j] = w0 * d_j, counted once per output pixel);
  input    thresholds -> a [C, N] table for the packer; plane steps d_j; bottom level a0;
  scales   phi[i, j] = s_i * d_j; the bottom-level term sum_c a0[c] * W_bar[o, c, kh, kw] summed over the
           taps inside the image, as a table indexed by the taps a window has in the padding
           (patvm.compiler.ops.bitserial).
At run time: pack_activation_planes (once per quantizer, however many layers it feeds) then
bitserial_conv2d. The conv PrimFunc is marked out-elementwise-fusable so that Relax's FuseOps folds the
epilogue (bias, BatchNorm, residual add, ReLU) into it; patvm.compiler.fuse_packing then adds the next
layer's packer to that kernel. A matched layer that takes the fp32 path keeps its conv2d / matmul, with
the weights stored as codes and expanded once, at load time (patvm.compiler.weight_codes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te
from tvm.relax.expr_functor import PyExprMutator, mutator

from patvm.approx.planes import decompose_weights
from patvm.compiler.match import LayerMatch, const_value, match_layer, static_shape
from patvm.compiler.ops.bitserial import ConvGeometry, bitserial_conv2d, clipped_taps
from patvm.compiler.ops.packing import pack_activation_planes, pack_weight_planes
from patvm.compiler.strategy import StrategyPolicy
from patvm.compiler.weight_codes import CODES_FUNCTION, WeightCodes, encode_weights, expand_weight_codes
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

    thresholds: np.ndarray          # [C, N] float32
    binary_planes: int | None       # NA for evenly spaced levels (the count's bits), else None: NA = N
    packed_weights: np.ndarray      # [K, K, NW, CW, O] uint64
    weight_planes: int              # planes of W_bar itself (M)
    phi: np.ndarray                 # [NW, NA] float32
    base_table: np.ndarray | None   # [RA+1, RB+1, CA+1, CB+1, O] float32 (ops.bitserial), None when a0 = 0
    window_phi: np.ndarray | None   # [NA] float32, w0 * d_j (ops.bitserial), None when w0 = 0
    weight_kind: str

    @property
    def activation_planes(self) -> int:
        return int(self.phi.shape[1])


def bottom_level_table(bottom: np.ndarray, w_bar: np.ndarray, geometry: ConvGeometry, height: int,
                       width: int) -> np.ndarray:
    """sum_c a0[c] * W_bar[o, c, kh, kw] over the taps inside the image, for every count of taps clipped
    before / after the image in rows and columns: [RA+1, RB+1, CA+1, CB+1, O]."""
    taps = np.einsum("c,ockl->okl", bottom, w_bar.astype(np.float64))            # [O, K, K]
    k = geometry.kernel
    ra, rb = clipped_taps(height, geometry)
    ca, cb = clipped_taps(width, geometry)
    table = np.zeros((ra + 1, rb + 1, ca + 1, cb + 1, taps.shape[0]))
    for a, b, c, d in np.ndindex(*table.shape[:4]):
        table[a, b, c, d] = taps[:, a:max(a, k - b), c:max(c, k - d)].sum(axis=(1, 2))
    return table.astype(np.float32)


def binary_layer_constants(match: LayerMatch) -> BinaryLayerConstants:
    stair, w_bar = match.staircase, match.weight
    channels = w_bar.shape[1]
    thresholds = np.ascontiguousarray(np.broadcast_to(stair.thresholds, (channels, stair.N))).astype(np.float32)
    steps = stair.thermometer_deltas()
    steps = steps[0] if steps.ndim == 2 else steps                 # equal over channels (checked)
    binary = stair.binary_planes()
    if binary:
        steps = steps[0] * 2.0 ** np.arange(binary)                # plane b counts 2^b steps
    bottom = np.broadcast_to(stair.levels[..., 0].astype(np.float64), (channels,))
    wp = decompose_weights(w_bar)
    planes, scales = wp.planes, wp.scales
    window_phi = (wp.offset * steps).astype(np.float32) if wp.offset != 0 else None
    if len(scales) == 0:  # all weights 0: keep one empty plane so the kernel shape stays regular
        planes, scales = np.zeros((1,) + w_bar.shape, bool), np.zeros(1)
    phi = (scales[:, None] * steps[None, :]).astype(np.float32)
    table = None
    if np.any(bottom != 0):   # zero padding is not the bottom level: what the window misses of it
        x_shape = static_shape(match.x)
        height, width = (1, 1) if match.kind == "dense" else (x_shape[2], x_shape[3])
        geometry = ConvGeometry(match.stride, match.pad, int(w_bar.shape[2]))
        table = bottom_level_table(bottom, w_bar, geometry, height, width)
    return BinaryLayerConstants(thresholds, binary, pack_weight_planes(planes), wp.count, phi, table, window_phi,
                                wp.kind)


def _prim_func(args: list[te.Tensor], out: te.Tensor, pattern: int, kernel: str):
    """(PrimFunc, output shape) with patvm's attributes."""
    func = (
        te.create_prim_func(args + [out], index_dtype_override="int64")
        .without_attr("global_symbol")
        .with_attr("op_pattern", pattern)
        .with_attr(PATVM_KERNEL_ATTR, kernel)
    )
    return func, [int(s) for s in out.shape]


def make_pack_func(x_shape, thresholds_shape, binary_planes: int | None):
    X = te.placeholder(x_shape, "float32", "X")
    T = te.placeholder(thresholds_shape, "float32", "thresholds")
    return _prim_func([X, T], pack_activation_planes(X, T, binary_planes), OP_PATTERN_OPAQUE, "pack")


def make_conv_func(a_shape, consts: BinaryLayerConstants, geometry: ConvGeometry):
    A = te.placeholder(a_shape, "uint64", "A")
    W = te.placeholder(consts.packed_weights.shape, "uint64", "W")
    phi = te.placeholder(consts.phi.shape, "float32", "phi")
    args = [A, W, phi]
    base = te.placeholder(consts.base_table.shape, "float32", "base_table") if consts.base_table is not None else None
    args += [base] if base is not None else []
    window = te.placeholder(consts.window_phi.shape, "float32", "window_phi") if consts.window_phi is not None else None
    args += [window] if window is not None else []
    out = bitserial_conv2d(A, W, phi, geometry, base, window)
    return _prim_func(args, out, OP_PATTERN_OUT_ELEMWISE_FUSABLE, "bitserial_conv2d")


def make_expand_func(codes: WeightCodes):
    words = te.placeholder(codes.words.shape, "uint32", "words")
    values = te.placeholder(codes.values.shape, "float32", "values")
    return _prim_func([words, values], expand_weight_codes(words, values, codes.bits, codes.shape),
                      OP_PATTERN_OPAQUE, "expand_weight_codes")


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
        self.code_params: list[tuple[relax.Var, WeightCodes]] = []   # new parameters of main: weight codes

    def _global(self, key, build, name):
        """(GlobalVar, output shape) of the kernel for `key`, built on first use."""
        if key not in self._funcs:
            func, out_shape = build()
            self._funcs[key] = (self.builder_.add_func(func, name), out_shape)
        return self._funcs[key]

    def _pack(self, match: LayerMatch, x4: relax.Expr, x_shape, consts: BinaryLayerConstants) -> relax.Expr:
        key = (match.quantized, x_shape)
        thresholds, binary = consts.thresholds, consts.binary_planes
        if key not in self._packed:
            gv, out = self._global(("pack", x_shape, thresholds.shape, binary),
                                   lambda: make_pack_func(x_shape, thresholds.shape, binary),
                                   "pa_pack_activation_planes")
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
        report.N = consts.activation_planes
        planes = int(consts.packed_weights.shape[2]) * consts.activation_planes   # the plane pairs computed
        report.M = consts.weight_planes
        report.workload = workload_key(match)
        strategy, report.reason = self.policy.choose(report.workload, planes)
        if strategy != "bit-serial":
            return self._fp32_from_codes(call, report)
        return self._lower(match, consts, report)

    def _fp32_from_codes(self, call: relax.Call, report: LayerReport) -> relax.Expr:
        """The layer's own conv2d / matmul, its constant weight replaced by the expansion of its codes."""
        codes = encode_weights(const_value(call.args[1]))
        if codes is None:
            return call
        words = relax.Var(f"weight_codes_{report.index}", relax.TensorType(codes.words.shape, "uint32"))
        self.code_params.append((words, codes))
        gv, shape = self._global(("expand", codes.words.shape, codes.bits, codes.shape),
                                 lambda: make_expand_func(codes), "expand_weight_codes")
        weight = self.builder_.emit(relax.call_tir(gv, [words, relax.const(codes.values)],
                                                   relax.TensorType(shape, "float32")))
        report.weight_kind = f"{codes.bits}-bit codes"
        report.packed_weight_bytes = codes.nbytes
        return relax.Call(call.op, [call.args[0], weight], call.attrs, call.ty_args)

    def _lower(self, match: LayerMatch, consts: BinaryLayerConstants, report: LayerReport) -> relax.Expr:
        x = match.x
        x_shape = static_shape(x)
        if match.kind == "dense":
            x_shape = (x_shape[0], x_shape[1], 1, 1)
            x = self.builder_.emit(relax.op.reshape(x, x_shape))
        packed = self._pack(match, x, x_shape, consts)
        a_shape = tuple(int(s) for s in packed.ty.shape)
        geometry = ConvGeometry(match.stride, match.pad, int(match.weight.shape[2]))
        key = ("conv", a_shape, consts.packed_weights.shape, consts.phi.shape, geometry,
               None if consts.base_table is None else consts.base_table.shape, consts.window_phi is not None)
        gv, out_shape = self._global(key, lambda: make_conv_func(a_shape, consts, geometry), "pa_bitserial_conv2d")
        args = [packed, relax.const(consts.packed_weights), relax.const(consts.phi)]
        args += [relax.const(consts.base_table)] if consts.base_table is not None else []
        args += [relax.const(consts.window_phi)] if consts.window_phi is not None else []
        y = relax.call_tir(gv, args, relax.TensorType(out_shape, "float32"))
        if match.kind == "dense":
            y = relax.op.reshape(self.builder_.emit(y), (out_shape[0], out_shape[1]))
        report.strategy = "bit-serial"
        report.weight_kind = consts.weight_kind
        report.packed_weight_bytes = int(consts.packed_weights.nbytes + consts.phi.nbytes
                                         + (consts.window_phi.nbytes if consts.window_phi is not None else 0))
        return y


def workload_key(match: LayerMatch) -> str:
    """A layer's identity for measured strategy choices (patvm.compiler.workload), in its string form."""
    return str(WorkloadKey(match.kind, static_shape(match.x), tuple(int(d) for d in match.weight.shape),
                           match.stride, match.pad, len(np.unique(match.weight)), match.staircase.N))


def lower_binary_layers(mod: tvm.IRModule, policy: StrategyPolicy | None = None
                        ) -> tuple[tvm.IRModule, list[LayerReport]]:
    """Rewrite `main`; returns the new module (dead quantizer chains removed) and the per-layer report.
    Weight codes become parameters of `main` after its inputs (`num_input` says how many inputs), and the
    function CODES_FUNCTION returns their values."""
    func = mod["main"]
    rewriter = BinaryLayerRewriter(mod, relax.analysis.get_var2val(func), policy or StrategyPolicy("bit-serial"))
    new_main = rewriter.visit_expr(func)
    if rewriter.code_params:
        params = list(new_main.params) + [var for var, _ in rewriter.code_params]
        new_main = relax.Function(params, new_main.body, new_main.ret_ty, new_main.is_pure, new_main.attrs)
        new_main = new_main.with_attr("num_input", len(func.params))
    rewriter.builder_.update_func(rewriter.builder_.get().get_global_var("main"), new_main)
    new_mod = relax.transform.DeadCodeElimination(["main"])(rewriter.builder_.get())
    if rewriter.code_params:
        codes = relax.Tuple([relax.const(c.words) for _, c in rewriter.code_params])
        new_mod[CODES_FUNCTION] = relax.Function([], codes).with_attr("global_symbol", CODES_FUNCTION)
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
