"""Quantized layers and the full-precision -> multiple-binary conversion."""
import numpy as np
import pytest
import torch
from torch import nn

from patvm.approx import approximate_weights_abc, approximate_weights_pa, conv2d_nchw
from patvm.errors import PatvmError
from patvm.train import (
    ABCActivationQuantizer,
    ABCConv2d,
    ABCLinear,
    ABCWeightQuantizer,
    PAConv2d,
    PALinear,
    PAQuantizer,
    PAWeightQuantizer,
    QuantConv2d,
    calibrate_activation_quantizers,
    to_multibinary,
)


def test_pa_conv2d_is_conv_of_the_quantized_input_and_weights():
    torch.manual_seed(0)
    conv = PAConv2d(4, 6, 3, stride=2, padding=1, input_quantizer=PAQuantizer(5), kernel_quantizer=PAWeightQuantizer(4),
                    bias=True)
    x = torch.randn(2, 4, 9, 9)
    a_bar = conv.input_quantizer.staircase().quantize(x.numpy())
    w_bar = approximate_weights_pa(conv.weight.detach().numpy(), 4).w_bar
    ref = conv2d_nchw(a_bar, w_bar, stride=2, pad=1) + conv.bias.detach().numpy().reshape(1, -1, 1, 1)
    np.testing.assert_allclose(conv(x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_abc_linear_is_linear_of_the_quantized_input_and_weights():
    torch.manual_seed(1)
    fc = ABCLinear(8, 3, input_quantizer=ABCActivationQuantizer(3), kernel_quantizer=ABCWeightQuantizer(3))
    x = torch.randn(5, 8)
    a_bar = fc.input_quantizer.staircase().quantize(x.numpy())
    w_bar = approximate_weights_abc(fc.weight.detach().numpy(), 3).w_bar
    np.testing.assert_allclose(fc(x).detach().numpy(), a_bar @ w_bar.T + fc.bias.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_layers_without_quantizers_are_the_float_layers():
    torch.manual_seed(2)
    conv, plain = PAConv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(conv(x), plain(x))
    fc, plain_fc = PALinear(6, 2, bias=False), nn.Linear(6, 2, bias=False)
    plain_fc.load_state_dict(fc.state_dict())
    torch.testing.assert_close(fc(torch.ones(1, 6)), plain_fc(torch.ones(1, 6)))


def test_layers_refuse_quantizers_of_the_wrong_family_or_kind():
    with pytest.raises(PatvmError, match="PA quantizers"):
        PAConv2d(2, 2, 3, kernel_quantizer=ABCWeightQuantizer(2))
    with pytest.raises(PatvmError, match="ABC quantizers"):
        ABCConv2d(2, 2, 3, input_quantizer=PAQuantizer(2))
    with pytest.raises(PatvmError, match="input_quantizer"):
        PALinear(2, 2, input_quantizer=PAWeightQuantizer(2))
    QuantConv2d(2, 2, 3, input_quantizer=ABCActivationQuantizer(2), kernel_quantizer=PAWeightQuantizer(2))  # any


def test_quantizer_parameters_train_with_the_layer():
    torch.manual_seed(3)
    conv = PAConv2d(2, 3, 3, padding=1, input_quantizer=PAQuantizer(3), kernel_quantizer=PAWeightQuantizer(2))
    names = {n for n, _ in conv.named_parameters()}
    assert {"weight", "bias", "input_quantizer.betas", "input_quantizer.threshold_first",
            "input_quantizer.threshold_gaps"} == names
    conv(torch.rand(4, 2, 6, 6) * 2).square().sum().backward()
    assert all(p.grad is not None and torch.any(p.grad != 0) for p in conv.parameters())


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
                         nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 9, 3))


@pytest.mark.parametrize("family,layer", [("pa", PAConv2d), ("abc", ABCConv2d)])
def test_to_multibinary_swaps_all_convs_but_the_first(family, layer):
    torch.manual_seed(4)
    fp = small_cnn()
    binary = to_multibinary(fp, family, M=4, N=3)
    assert type(binary[0]) is nn.Conv2d and type(fp[3][0]) is nn.Conv2d      # the original is untouched
    swapped = [binary[3][0], binary[4]]
    assert all(type(m) is layer for m in swapped) and type(binary[7]) is nn.Linear
    for new, old in zip(swapped, [fp[3][0], fp[4]]):
        torch.testing.assert_close(new.weight, old.weight)
        assert new.stride == old.stride and new.padding == old.padding and (new.bias is None) == (old.bias is None)
    assert all(m.kernel_quantizer.M == 4 and m.input_quantizer.N == 3 for m in swapped)


def test_calibration_fits_each_quantizer_to_what_it_sees():
    torch.manual_seed(5)
    model = to_multibinary(small_cnn().eval(), "pa", M=2, N=4)
    x = torch.randn(32, 1, 7, 7)
    assert calibrate_activation_quantizers(model, x) == 2
    seen = []
    hook = model[4].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.eval()(x)
    hook.remove()
    fitted = PAQuantizer(4)
    fitted.init_from_data(seen[0])
    np.testing.assert_allclose(model[4].input_quantizer.staircase().thresholds, fitted.staircase().thresholds,
                               rtol=1e-6)
