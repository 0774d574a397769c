"""Frontends: other model formats rewritten into patvm's canonical form (standard ONNX + ai.patvm.PAQuantize)."""
