"""Single-step, stateful execution: T calls of one time step give the multi-step forward's spikes and logits bit
for bit, at every split point of a narrow model of each backbone, for a lone image and a batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikebottlenet.shared.backbones import SpikingMobileNetV2Config, SpikingResNetConfig
from spikebottlenet.shared.backbones.base import BackboneConfig
from spikebottlenet.shared.layers import SpikeConv2d, SpikeConvTranspose2d
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.neuron import LIF, StepState, stepping
from spikebottlenet.shared.split_model import SpikeBottleNet

NARROW = {
    "spiking_resnet50": SpikingResNetConfig(width_multiplier=0.0625, num_classes=10),
    "spiking_mobilenetv2": SpikingMobileNetV2Config(width_multiplier=0.125, num_classes=10),
}


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """``model`` in eval mode with running statistics away from their init, so every tdBN is a real affine map."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.3, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


def split_points(backbone: BackboneConfig) -> list[int]:
    return [point.index for point in backbone.split_points()]


@pytest.mark.parametrize("arch", NARROW)
@pytest.mark.parametrize("batch", [1, 3])
def test_t_single_steps_are_the_multi_step_forward_at_every_split_point(arch: str, batch: int) -> None:
    backbone = NARROW[arch]
    images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    for k in split_points(backbone):
        model = perturbed(SpikeBottleNet(ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(k))), k)
        with torch.inference_mode():
            spikes = model.head(images)  # [T, B, C', H', W'], the fused multi-step pass
            logits = model.tail(spikes)
            head_state, tail_state = StepState(), StepState()
            steps = [model.head.step(images, head_state) for _ in range(spikes.shape[0])]
            running = [model.tail.step(step, tail_state) for step in steps]
        assert torch.equal(torch.cat(steps), spikes), f"{arch} split point {k}: head spikes"
        assert torch.equal(running[-1], logits), f"{arch} split point {k}: logits after T steps"
        # the running logits after t steps are those of the first t steps run as a frame of their own
        with torch.inference_mode():
            assert torch.equal(running[0], model.tail(spikes[:1])), f"{arch} split point {k}: running logits"


@pytest.mark.parametrize("fused", [True, False], ids=["fused pass", "step-by-step loop"])
def test_a_lif_continues_from_the_state_and_a_fresh_state_is_a_reset(fused: bool) -> None:
    lif = LIF()
    lif.fused_inference = fused
    current = torch.randn(5, 2, 7, generator=torch.Generator().manual_seed(0))
    whole, _ = lif.step_by_step(current)
    state = StepState()
    with torch.no_grad(), stepping(lif, state):
        first = [lif(current[t : t + 1]) for t in range(5)]
    with torch.no_grad(), stepping(lif, StepState()):  # another stream starts at rest, whatever the first left
        second = [lif(current[t : t + 1]) for t in range(5)]
    assert torch.equal(torch.cat(first), whole) and torch.equal(torch.cat(second), whole)
    assert lif.step_state is None  # outside ``stepping`` the module is multi-step and stateless again


@pytest.mark.parametrize(
    "make",
    [
        lambda: SpikeConv2d(4, 16, 3, padding=1, bias=False),
        lambda: SpikeConv2d(256, 64, 1, bias=False),
        lambda: SpikeConv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False),
        lambda: SpikeConvTranspose2d(4, 256, 3, 2, padding=1, output_padding=1, bias=False),
    ],
    ids=["3x3", "1x1", "depthwise", "transposed"],
)
def test_a_spiking_conv_gives_each_sample_the_same_bits_in_any_batch(make) -> None:  # type: ignore[no-untyped-def]
    conv = make()
    x = (torch.rand(8, conv.in_channels, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    with torch.inference_mode():
        whole = conv(x)
        assert torch.equal(torch.cat([conv(x[i : i + 1]) for i in range(8)]), whole)
        assert torch.equal(torch.cat([conv(x[i : i + 3]) for i in range(0, 8, 3)]), whole)
    # the same layer as torch's own conv, to float32 rounding
    reference = (
        nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        if isinstance(conv, SpikeConv2d)
        else nn.functional.conv_transpose2d(x, conv.weight, None, conv.stride, conv.padding, conv.output_padding)
    )
    torch.testing.assert_close(whole, reference.detach(), rtol=1e-5, atol=1e-5)
