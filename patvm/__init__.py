"""patvm: a TVM compiler backend for Piecewise-Approximation (PA) and ABC-Net multiple-binary CNNs.

    import patvm
    model = patvm.compile("pa-resnet18.onnx", target="host")
    y = model.run(x)[0]
    model.export("pa-resnet18.so"); patvm.load("pa-resnet18.so")
"""
from patvm.errors import InputError, ModelError, PatvmError

__version__ = "0.1.0"


def compile(model, target="host", tuning_db=None, strategy="auto"):
    """Compile an ONNX PA model (path or ModelProto) for `target`; returns a CompiledModel.

    strategy "auto" picks bit-serial or dequantized fp32 per layer (see patvm.compiler.strategy);
    "bit-serial" lowers every exact match; "fp32" is TVM's plain fp32 build of the same graph.
    tuning_db: a `patvm tune` database folder; None uses the database shipped in schedules/ for this
    target when there is one; False uses none (hand schedules only). `.schedules` says which applied."""
    from patvm.compiler.pipeline import compile_model
    return compile_model(model, target=target, tuning_db=tuning_db, strategy=strategy)


def load(path):
    """Load a module written by `CompiledModel.export`."""
    from patvm.runtime import load_module
    return load_module(path)


__all__ = ["InputError", "ModelError", "PatvmError", "compile", "load", "__version__"]
