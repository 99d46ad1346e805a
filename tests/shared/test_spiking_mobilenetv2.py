"""Spiking MobileNetV2: block geometry, binary block outputs, MACs counted by hand, gradients to the stem, the
fused LIF inference pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikebottlenet.shared.activity_monitor import structural_flops
from spikebottlenet.shared.backbones import SpikingMobileNetV2Config
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.shared.energy import CountMode
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.neuron import LIF
from spikebottlenet.shared.split_model import SpikeBottleNet, SplitHead

from .test_spiking_resnet import assert_fused_inference_is_the_reference, assert_gradient_reaches_every_conv

FULL = SpikingMobileNetV2Config()
NARROW = SpikingMobileNetV2Config(width_multiplier=0.25, num_classes=10)

# MobileNetV2's stages written out: (expansion t, channels c, repeats n, first stride s)
STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# block output (C, H = W) for 32x32 inputs at full width: 32 -> 16 -> 8 -> 4
FULL_OUTPUTS = (
    [(16, 32)] + [(24, 32)] * 2 + [(32, 16)] * 3 + [(64, 8)] * 4 + [(96, 8)] * 3 + [(160, 4)] * 3 + [(320, 4)]
)


def test_seventeen_split_points_with_the_documented_shapes() -> None:
    points = FULL.split_points()
    assert [p.name for p in points] == [f"IRB{k}" for k in range(1, 18)]
    assert [(p.channels, p.height) for p in points] == FULL_OUTPUTS
    assert all(p.height == p.width for p in points)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible (torchvision/models/_utils.py), written out."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


@pytest.mark.parametrize("width", [0.0625, 0.25, 0.5, 0.75, 1.0])
def test_narrow_channel_counts_are_multiples_of_eight_as_torchvision_rounds_them(width: float) -> None:
    config = SpikingMobileNetV2Config(width_multiplier=width, num_classes=10)
    expected = [make_divisible(c * width) for _, c, n, _ in STAGES for _ in range(n)]
    assert [p.channels for p in config.split_points()] == expected
    assert config.scaled(32) == make_divisible(32 * width)  # the stem
    if width == 1.0:  # full width is unchanged
        assert [p.channels for p in config.split_points()] == [c for c, _ in FULL_OUTPUTS]


def test_a_checkpoint_config_from_before_the_divisor_keeps_its_channel_counts() -> None:
    stored = SpikingMobileNetV2Config(width_multiplier=0.25, num_classes=10).to_dict()
    del stored["channel_divisor"]  # as every MobileNet checkpoint written before the field
    old = SpikingMobileNetV2Config.from_dict(stored)
    # the nearest count at width 1/4: 16 -> 4, 24 -> 6, 32 -> 8, ... (Python's round)
    assert [p.channels for p in old.split_points()] == [round(c * 0.25) for _, c, n, _ in STAGES for _ in range(n)]
    assert old.channel_divisor == 1


def test_block_outputs_of_a_real_forward_are_binary_spikes_of_those_shapes() -> None:
    torch.manual_seed(0)
    model = SpikingBackbone(FULL, time_steps=2)  # full width, train mode: BN uses batch statistics
    with torch.no_grad():
        x = model.stem(torch.randn(2, 3, 32, 32), model.time_steps)
        assert x.shape == (2, 2, 32, 32, 32)  # stem: 32 channels, stride 1
        for (channels, size), block in zip(FULL_OUTPUTS, model.blocks.values(), strict=True):
            x = block(x)
            assert x.shape == (2, 2, channels, size, size)
            assert ((x == 0) | (x == 1)).all() and x.any()
        assert model.classifier(x).shape == (2, 100)
    assert model.classifier.conv.conv.module.out_channels == 1280


def test_structure_of_each_inverted_residual_block() -> None:
    blocks = list(SpikingBackbone(FULL, time_steps=1).blocks.values())
    # t = 1: no expansion conv; the 1x1 project has no LIF of its own, the block ends in one
    assert isinstance(blocks[0].expand, nn.Identity)
    for block, (channels, _) in zip(blocks, FULL_OUTPUTS, strict=True):
        depthwise = block.depthwise.conv.module
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels  # depthwise
        assert depthwise.kernel_size == (3, 3)
        assert block.project.conv.module.out_channels == channels and isinstance(block.lif, LIF)
        assert not hasattr(block.project, "lif")
    # identity shortcut exactly where stride is 1 and channels match
    shortcuts = [k for k, block in enumerate(blocks, 1) if block.has_shortcut]
    assert shortcuts == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert [k for k, block in enumerate(blocks, 1) if block.depthwise.conv.module.stride == (2, 2)] == [4, 7, 14]


def test_width_multiplier_scales_every_channel_count() -> None:
    assert [p.channels for p in NARROW.split_points()] == [make_divisible(c * 0.25) for c, _ in FULL_OUTPUTS]
    model = SpikingBackbone(NARROW, time_steps=1)
    assert model.stem.conv.out_channels == 8 and model.classifier.conv.conv.module.out_channels == 320
    assert model.classifier.rate.fc.out_features == 10


def hand_counted_macs(width: float, split_point: int, image_size: int = 32) -> dict[str, int]:
    """MACs per image per time step, from the stage table above: no model involved."""
    scaled = lambda c: make_divisible(c * width)  # noqa: E731
    in_ch, size, blocks = scaled(32), image_size, []
    for t, c, n, s in STAGES:
        for i in range(n):
            stride = s if i == 0 else 1
            out_size = size // stride
            hidden = in_ch * t
            expand = size * size * hidden * in_ch if t != 1 else 0  # 1x1 on the block input
            depthwise = out_size * out_size * hidden * 1 * 3 * 3  # one input channel per group
            project = out_size * out_size * scaled(c) * hidden
            blocks.append(expand + depthwise + project)
            in_ch, size = scaled(c), out_size
    return {"blocks": sum(blocks[:split_point]), "stem": image_size * image_size * scaled(32) * 3 * 9}


@pytest.mark.parametrize("split_point", [1, 4, 8, 17])
def test_energy_module_counts_the_hand_counted_macs(split_point: int) -> None:
    backbone = SpikingMobileNetV2Config(width_multiplier=0.125, num_classes=10)
    config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(split_point))
    with torch.device("meta"):
        head = SplitHead(config)
    expected = hand_counted_macs(0.125, split_point)
    assert structural_flops(head, config.time_steps, 32, CountMode.PAPER) == expected["blocks"]
    # complete mode adds the stem and the encoder's 3x3 conv (no down-sampling shortcut convs here)
    point, (_, c_out, h_out, w_out) = config.split_point, config.spike_shape
    encoder = h_out * w_out * c_out * point.channels * 9
    assert (
        structural_flops(head, config.time_steps, 32, CountMode.COMPLETE)
        == expected["blocks"] + expected["stem"] + encoder
    )


def test_full_width_macs_up_to_the_last_block() -> None:
    with torch.device("meta"):
        head = SplitHead(ModelConfig(backbone=FULL).with_split(FULL.bottleneck_preset(17)))
    assert structural_flops(head, 4, 32) == hand_counted_macs(1.0, 17)["blocks"]


def test_gradient_reaches_the_stem_of_the_backbone() -> None:
    torch.manual_seed(0)
    assert_gradient_reaches_every_conv(SpikingBackbone(NARROW, time_steps=2))


@pytest.mark.parametrize("split_point", [1, 8, 17])  # the longest tail; the middle; the stride-2 bottleneck
def test_gradient_reaches_the_stem_through_the_bottleneck(split_point: int) -> None:
    torch.manual_seed(0)
    config = ModelConfig(backbone=NARROW).with_split(NARROW.bottleneck_preset(split_point))
    assert_gradient_reaches_every_conv(SpikeBottleNet(config))


def test_gradient_passes_every_lif() -> None:
    """Each LIF's output gets a nonzero gradient in one backward: the surrogate is open all the way down."""
    torch.manual_seed(0)
    model = SpikingBackbone(NARROW, time_steps=2).train()
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    outputs: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        outputs.append(out)

    handles = [lif.register_forward_hook(keep) for lif in lifs]
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    nn.functional.cross_entropy(model(images), torch.tensor([1, 7, 3, 0])).backward()
    for handle in handles:
        handle.remove()
    assert (
        len(outputs) == len(lifs) == 1 + 16 * 2 + 1 * 1 + 17 + 1
    )  # stem, expand+dw (dw only in IRB1), blocks, classifier
    assert all(out.grad is not None and out.grad.any() for out in outputs)


# blocks with and without an identity shortcut; the stride-2 bottleneck
@pytest.mark.parametrize("split_point", [3, 17])
def test_fused_inference_gives_the_reference_outputs(split_point: int) -> None:
    config = ModelConfig(backbone=NARROW).with_split(NARROW.bottleneck_preset(split_point))
    assert_fused_inference_is_the_reference(config)
