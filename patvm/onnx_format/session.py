"""onnxruntime sessions, the reference executor of the PA-ONNX format, built one way everywhere: the CPU
provider, onnxruntime's warnings off unless asked."""
from __future__ import annotations

import os


def session_options(threads: int | None = None, quiet: bool = True):
    """onnxruntime SessionOptions: `threads` intra-op threads (None: onnxruntime's default); `quiet` shows
    only errors."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if quiet:
        options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return options


def onnxruntime_session(model_or_path, options=None):
    """A CPU InferenceSession for a ModelProto, a path or serialized bytes (`options` default:
    session_options())."""
    import onnxruntime as ort
    data = (model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString")
            else os.fspath(model_or_path))
    return ort.InferenceSession(data, options if options is not None else session_options(),
                                providers=["CPUExecutionProvider"])
