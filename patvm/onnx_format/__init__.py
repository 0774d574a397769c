"""The PA-ONNX format (docs/pa-onnx.md): the `ai.patvm.PAQuantize` node and a writer for PA graphs."""
from patvm.onnx_format.paquantize import DOMAIN, OP_TYPE, attach_function, is_paquantize, paquantize_function
from patvm.onnx_format.writer import GraphWriter, save_model

__all__ = ["DOMAIN", "OP_TYPE", "GraphWriter", "attach_function", "is_paquantize", "paquantize_function", "save_model"]
