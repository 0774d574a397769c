"""QONNX (Brevitas' export format, domain qonnx.custom_op.general) -> patvm's canonical form.

    is_qonnx(model)       does the model use a QONNX / FINN custom domain
    needs_rewrite(model)  that, or low-bit QuantizeLinear -> Clip -> DequantizeLinear chains (QCDQ)
    to_canonical(model)   standard ONNX with ai.patvm.PAQuantize quantizers (patvm.frontends.qonnx.rewrite)
    reference_outputs     qonnx's own executor, the reference patvm checks such models against

Modules: rewrite (the rewrites, to_canonical), graph (the graph under rewriting, quantizer parameters),
qcdq (low-bit QuantizeLinear -> DequantizeLinear pairs), arithmetic (each op's exact staircase), reference.
"""
from patvm.frontends.qonnx.reference import reference_outputs
from patvm.frontends.qonnx.rewrite import (
    QONNX_DOMAINS,
    has_low_bit_qcdq,
    is_qonnx,
    needs_rewrite,
    to_canonical,
)

__all__ = ["QONNX_DOMAINS", "has_low_bit_qcdq", "is_qonnx", "needs_rewrite", "reference_outputs", "to_canonical"]
