"""QONNX (Brevitas' export format, domain qonnx.custom_op.general) -> patvm's canonical form.

    is_qonnx(model)       does the model use a QONNX / FINN custom domain
    to_canonical(model)   standard ONNX with ai.patvm.PAQuantize quantizers (patvm.frontends.qonnx.rewrite)
    reference_outputs     qonnx's own executor, the reference patvm checks such models against
"""
from patvm.frontends.qonnx.reference import reference_outputs
from patvm.frontends.qonnx.rewrite import QONNX_DOMAINS, is_qonnx, to_canonical

__all__ = ["QONNX_DOMAINS", "is_qonnx", "reference_outputs", "to_canonical"]
