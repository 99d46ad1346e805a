"""Time folding, threshold-dependent batch norm and the direct-encoding stem."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shared.energy import ConvRole
from shared.layers import RESIDUAL_ALPHA, ConvBNLIF, DirectEncodingStem, TdBatchNorm, TimeFolded
from shared.neuron import LIFConfig

T, B, C, H, W = 4, 3, 5, 6, 6


def per_channel_input(generator: torch.Generator) -> torch.Tensor:
    """[T, B, C, H, W] with a different mean and scale per channel and a drift over time."""
    x = torch.randn(T, B, C, H, W, generator=generator, dtype=torch.float64)
    x = x * torch.linspace(0.5, 3.0, C, dtype=torch.float64).view(1, 1, C, 1, 1)
    x = x + torch.linspace(-2.0, 2.0, C, dtype=torch.float64).view(1, 1, C, 1, 1)
    return x + torch.arange(T, dtype=torch.float64).view(T, 1, 1, 1, 1)  # time steps differ in mean


@pytest.mark.parametrize("alpha", [1.0, RESIDUAL_ALPHA])
def test_tdbn_train_output_has_mean_beta_and_std_lambda_alpha_vth(alpha: float) -> None:
    generator = torch.Generator().manual_seed(0)
    v_th = 0.5
    bn = TdBatchNorm(C, v_th, alpha).double().train()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, C))  # lambda
        bn.bias.copy_(torch.linspace(-1.0, 1.0, C))  # beta
    x = per_channel_input(generator)
    y = bn(x)
    # statistics per channel over T, B, H, W together
    mean = y.mean(dim=(0, 1, 3, 4))
    std = y.std(dim=(0, 1, 3, 4), unbiased=False)
    var_x = x.var(dim=(0, 1, 3, 4), unbiased=False)
    eps_shrink = torch.sqrt(var_x / (var_x + bn.eps))  # BN divides by sqrt(var + eps), not sqrt(var)
    assert torch.allclose(mean, bn.bias.detach(), atol=1e-9)
    assert torch.allclose(std, bn.weight.detach() * alpha * v_th * eps_shrink, atol=1e-9)
    # normalized jointly over time, not per step: the time steps keep their different means
    step_means = y[:, :, 0].mean(dim=(1, 2, 3))
    assert (step_means.diff() > 0).all()


def test_tdbn_running_statistics_and_eval_formula() -> None:
    generator = torch.Generator().manual_seed(1)
    bn = TdBatchNorm(C, v_th=0.5).double()
    x = per_channel_input(generator)
    bn.train()(x)
    n = T * B * H * W
    batch_mean = x.mean(dim=(0, 1, 3, 4))
    batch_var = x.var(dim=(0, 1, 3, 4), unbiased=False) * n / (n - 1)  # running_var is unbiased
    m = bn.momentum
    assert torch.allclose(bn.running_mean, m * batch_mean)  # from the initial 0
    assert torch.allclose(bn.running_var, (1 - m) * 1.0 + m * batch_var)  # from the initial 1
    assert bn.num_batches_tracked.item() == 1
    # eval: y = lambda * alpha * v_th * (x - running_mean) / sqrt(running_var + eps) + beta
    with torch.no_grad():
        bn.weight.fill_(1.5)
        bn.bias.fill_(0.25)
    shape = (1, 1, C, 1, 1)
    expected = (1.5 * 0.5 * (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
                + 0.25)
    assert torch.allclose(bn.eval()(x), expected)


def test_tdbn_momentum_none_is_a_cumulative_average() -> None:
    generator = torch.Generator().manual_seed(2)
    bn = TdBatchNorm(C, v_th=0.5, momentum=None).double().train()
    batches = [per_channel_input(generator) * (i + 1) for i in range(3)]
    for x in batches:
        bn(x)
    assert bn.num_batches_tracked.item() == 3
    expected = torch.stack([x.mean(dim=(0, 1, 3, 4)) for x in batches]).mean(dim=0)
    assert torch.allclose(bn.running_mean, expected)


def test_time_folded_equals_applying_the_module_at_every_step() -> None:
    generator = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(C, 7, 3, 2, padding=1)
    x = torch.randn(T, B, C, H, W, generator=generator)
    folded = TimeFolded(conv)(x)
    assert torch.allclose(folded, torch.stack([conv(x[t]) for t in range(T)]), atol=1e-6)


def test_stem_equals_convolving_the_repeated_image() -> None:
    generator = torch.Generator().manual_seed(4)
    lif = LIFConfig()
    stem = DirectEncodingStem(8, lif)
    image = torch.randn(B, 3, H, W, generator=generator)
    spikes = stem(image, T)  # train mode: BN uses batch statistics
    # the long way: T copies of the image through the time-folded conv, tdBN and LIF
    repeated = image.unsqueeze(0).expand(T, -1, -1, -1, -1)
    expected = stem.lif(stem.bn(TimeFolded(stem.conv)(repeated)))
    assert spikes.shape == (T, B, 8, H, W)
    assert torch.equal(spikes, expected)
    assert 0 < spikes.mean() < 1


def test_conv_bn_lif_emits_binary_spikes_of_the_strided_shape() -> None:
    generator = torch.Generator().manual_seed(5)
    unit = ConvBNLIF(C, 6, 3, 2, LIFConfig(), role=ConvRole.BLOCK)
    spikes_in = (torch.rand(T, B, C, H, W, generator=generator) < 0.3).float()
    out = unit(spikes_in)
    assert out.shape == (T, B, 6, math.ceil(H / 2), math.ceil(W / 2))
    assert set(out.unique().tolist()) == {0.0, 1.0}
