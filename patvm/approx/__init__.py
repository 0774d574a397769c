"""The numpy reference semantics of PA and ABC-Net: what every other part of patvm is checked against."""
from patvm.approx.abc import ABCWeights, abc_activation, abc_activation_staircase, approximate_weights_abc
from patvm.approx.pa import (
    PAWeights,
    approximate_weights_pa,
    pa_activation_init,
    pa_activation_levels,
    pa_endpoint_coefficients,
)
from patvm.approx.planes import WeightPlanes, conv2d_nchw, decompose_weights, pa_eq19_conv2d, plane_conv2d
from patvm.approx.staircase import Staircase, fold_batchnorm, staircase_quantize

__all__ = [
    "ABCWeights", "PAWeights", "Staircase", "WeightPlanes", "abc_activation", "abc_activation_staircase",
    "approximate_weights_abc", "approximate_weights_pa", "conv2d_nchw", "decompose_weights", "fold_batchnorm",
    "pa_activation_init", "pa_activation_levels", "pa_endpoint_coefficients", "pa_eq19_conv2d", "plane_conv2d",
    "staircase_quantize",
]
