"""Training PA and ABC-Net multiple-binary CNNs in torch, and exporting them to PA-ONNX.

torch is an optional extra (`pip install 'patvm[train]'`): `import patvm` works without it, this
package needs it.

    from patvm.train import PAConv2d, PAQuantizer, PAWeightQuantizer, export_onnx
    conv = PAConv2d(32, 64, 3, padding=1, input_quantizer=PAQuantizer(5), kernel_quantizer=PAWeightQuantizer(4))
    export_onnx(model, example_input, "model.onnx")
"""
try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("patvm.train needs torch: pip install 'patvm[train]'") from exc

from patvm.train.convert import calibrate_activation_quantizers, to_multibinary
from patvm.train.export import export_onnx
from patvm.train.layers import ABCConv2d, ABCLinear, PAConv2d, PALinear, QuantConv2d, QuantLinear
from patvm.train.quantizers import (
    ABCActivationQuantizer,
    ABCWeightQuantizer,
    PAActivationQuantizer,
    PAQuantizer,
    PAWeightQuantizer,
    Quantizer,
    StaircaseQuantizer,
    WeightQuantizer,
)

__all__ = [
    "ABCActivationQuantizer", "ABCConv2d", "ABCLinear", "ABCWeightQuantizer", "PAActivationQuantizer", "PAConv2d",
    "PALinear", "PAQuantizer", "PAWeightQuantizer", "QuantConv2d", "QuantLinear", "Quantizer", "StaircaseQuantizer",
    "WeightQuantizer", "calibrate_activation_quantizers", "export_onnx", "to_multibinary",
]
