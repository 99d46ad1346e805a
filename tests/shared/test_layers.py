"""Time folding, threshold-dependent batch norm, the direct-encoding stem, and tdBN folded into the LIF."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spikebottlenet.shared.energy import ConvRole
from spikebottlenet.shared.layers import RESIDUAL_ALPHA, ConvBNLIF, DirectEncodingStem, TimeFolded
from spikebottlenet.shared.lif_config import LIFConfig
from spikebottlenet.shared.neuron import LIF, use_fused_inference
from spikebottlenet.shared.td_batch_norm import TdBatchNorm, batch_norm_rounds_once

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
    expected = 1.5 * 0.5 * (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) + 0.25
    assert torch.allclose(bn.eval()(x), expected)
    # the same map as x * scale + shift in float64, as a NIR export folds it into the conv before it
    scale, shift = bn.exact_affine()
    assert scale.dtype == shift.dtype == torch.float64
    assert torch.allclose(x * scale.view(shape) + shift.view(shape), expected, rtol=1e-12, atol=1e-12)


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


# --- tdBN folded into the LIF's fused inference pass ---

# Channels of the folded-tdBN checks: every channel is checked, and a fold that differs from the module by
# an ulp in a fraction p of channels goes unseen with probability (1 - p)^FOLD_CHANNELS: 3 % for the 0.7 %
# of torch.sqrt's results that are an ulp off with MKL's AVX-512 path (the fold once used it), nil for its
# 17 % with SSE4.2 (``test_folded_tdbn_matches_on_other_cpus``)
FOLD_CHANNELS = 512


def trained_tdbn(channels: int, alpha: float, generator: torch.Generator) -> TdBatchNorm:
    """An eval-mode tdBN with running statistics and affine parameters as training leaves them, far from their
    initial mean 0, variance 1, weight 1 and bias 0: variances over six decades, means up to tens of standard
    deviations from 0 (so x * scale and shift are large and cancel), weights of either sign."""
    bn = TdBatchNorm(channels, v_th=0.5, alpha=alpha).eval()
    with torch.no_grad():
        bn.running_var.copy_(10 ** (torch.rand(channels, generator=generator) * 6 - 3))  # 1e-3 .. 1e3
        bn.running_mean.copy_(torch.randn(channels, generator=generator) * 10)
        bn.weight.copy_(torch.randn(channels, generator=generator))
        bn.bias.copy_(torch.randn(channels, generator=generator))
    return bn


def conv_output(bn: TdBatchNorm, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """x [T, B, C, H, W] distributed as ``bn``'s running statistics say its input is: per channel, the running
    mean plus the running standard deviation times N(0, 1), so that the currents spread around the threshold."""
    channel = (1, 1, -1, 1, 1)
    noise = torch.randn(shape, generator=generator)
    return bn.running_mean.view(channel) + bn.running_var.sqrt().view(channel) * noise


def assert_fused_current_is(
    current: torch.Tensor, fire: Callable[[float], torch.Tensor], generator: torch.Generator
) -> None:
    """The fused pass's input current is ``current`` ([1, B, C, H, W], one step) bit for bit, in every channel.

    Spikes alone would hide a one-ulp error almost everywhere, so the threshold is put on the current
    itself: ``fire(v_th)`` (the fused pass's spikes with that threshold) must fire where the current
    equals v_th, and not fire with v_th one float above it. One element at random in each channel: each
    channel has a scale and shift of its own.
    """
    _, batch, channels, height, width = current.shape
    for c in range(channels):
        b, h, w = (int(torch.randint(n, (), generator=generator)) for n in (batch, height, width))
        at = current[0, b, c, h, w].item()
        above = np.nextafter(np.float32(at), np.float32(np.inf)).item()
        assert fire(at)[0, b, c, h, w] == 1 and fire(above)[0, b, c, h, w] == 0, (
            f"current differs in channel {c} at {(0, b, c, h, w)}: {at}"
        )


def test_batch_norm_rounding_is_known_on_this_cpu() -> None:
    # None would leave tdBN unfolded (correct, only slower); x86 kernels round once (AVX2, AVX-512) or twice
    assert batch_norm_rounds_once() is not None


@pytest.mark.parametrize("alpha", [1.0, RESIDUAL_ALPHA])
@pytest.mark.parametrize("with_shortcut", [False, True])
def test_folded_tdbn_current_is_bitwise_the_modules(alpha: float, with_shortcut: bool) -> None:
    generator = torch.Generator().manual_seed(6)
    bn = trained_tdbn(FOLD_CHANNELS, alpha, generator)
    x = conv_output(bn, (1, 2, FOLD_CHANNELS, 3, 3), generator)  # [T=1, B, C, H, W]
    shortcut = (torch.rand(x.shape, generator=generator) < 0.5).float() if with_shortcut else None
    with torch.inference_mode():
        current = bn(x) if shortcut is None else bn(x) + shortcut  # the modules, unfused

        def fire(v_th: float) -> torch.Tensor:
            return LIF(LIFConfig(v_th=v_th))(x, bn, shortcut=shortcut)

        assert_fused_current_is(current, fire, generator)


def test_folded_tdbn_matches_on_other_cpus() -> None:
    """The fold on what other CPUs run: ATen's DEFAULT kernels, which round x * scale + shift twice, and MKL's
    SSE4.2 code path, whose float32 square root (torch.sqrt's) is an ulp off for 17 % of variances, where its
    AVX-512 path is for 0.7 % and its AVX2 path for none."""
    check = (
        "import torch; from spikebottlenet.shared.td_batch_norm import batch_norm_rounds_once\n"
        "assert torch.backends.cpu.get_cpu_capability() == 'DEFAULT', torch.backends.cpu.get_cpu_capability()\n"
        "assert batch_norm_rounds_once() is False\n"
        "from tests.shared import test_layers\n"
        "for alpha in (1.0, test_layers.RESIDUAL_ALPHA):\n"
        "    for with_shortcut in (False, True):\n"
        "        test_layers.test_folded_tdbn_current_is_bitwise_the_modules(alpha, with_shortcut)\n"
        "test_layers.test_the_folded_map_follows_every_change_of_the_tdbn()\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    subprocess.run([sys.executable, "-c", check], env=env, cwd=Path(__file__).parents[2], check=True, timeout=300)


@pytest.mark.parametrize("unit", ["conv_bn_lif", "stem"])
def test_units_fold_tdbn_in_eval_and_run_it_as_a_module_in_training(unit: str) -> None:
    generator = torch.Generator().manual_seed(7)
    if unit == "stem":
        module, x = DirectEncodingStem(6, LIFConfig()), (torch.randn(B, 3, H, W, generator=generator), T)
    else:
        module = ConvBNLIF(C, 6, 3, 1, LIFConfig(), role=ConvRole.BLOCK)
        x = ((torch.rand(T, B, C, H, W, generator=generator) < 0.3).float(),)
    # train mode, even without autograd: the tdBN runs as a module on batch statistics and keeps them
    # (momentum None: the running statistics become this batch's)
    module.bn.momentum = None
    with torch.no_grad():
        module.train()(*x)
    assert module.bn.num_batches_tracked.item() == 1
    with torch.inference_mode():
        fused = module.eval()(*x)
        use_fused_inference(module, False)
        reference = module(*x)
    assert torch.equal(fused, reference) and 0 < fused.mean() < 1


def test_the_folded_map_follows_every_change_of_the_tdbn() -> None:
    generator = torch.Generator().manual_seed(8)
    bn = trained_tdbn(C, 1.0, generator)
    x = conv_output(bn, (1, B, C, H, W), generator)  # [T=1, B, C, H, W]: one step, each element a current

    def assert_fold_is_current() -> None:
        with torch.inference_mode():
            assert bn.inference_affine() is not None
            assert_fused_current_is(bn(x), lambda v_th: LIF(LIFConfig(v_th=v_th))(x, bn), generator)

    assert_fold_is_current()
    assert bn.inference_affine() is bn.inference_affine()  # kept between calls
    with torch.no_grad():
        bn.train()(x * 5 + 2)  # new running statistics, updated inside F.batch_norm
    bn.eval()
    assert_fold_is_current()
    bn.load_state_dict(trained_tdbn(C, 1.0, generator).state_dict())
    assert_fold_is_current()
    with torch.no_grad():
        bn.bias.add_(1.0)  # an optimizer step's in-place update
    assert_fold_is_current()
