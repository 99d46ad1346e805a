"""Spike ResNet50 geometry, and the surrogate gradient reaching the stem through every LIF."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.backbones import SpikingBackbone, SpikingResNetConfig
from shared.split_model import ModelConfig, SpikeBottleNet

NARROW = SpikingResNetConfig(width_multiplier=0.0625, num_classes=10)


def test_block_specs_of_the_paper_backbone() -> None:
    config = SpikingResNetConfig()
    specs = config.block_specs()
    assert [p.name for p in config.split_points()] == [f"RB{k}" for k in range(1, 17)]
    assert [p.key for p in config.split_points()] == [f"rb{k}" for k in range(1, 17)]  # parameter names
    out = [(s.out_channels, s.out_size) for s in specs]
    assert out == [(256, 32)] * 3 + [(512, 16)] * 4 + [(1024, 8)] * 6 + [(2048, 4)] * 3
    assert [(p.channels, p.height, p.width) for p in config.split_points()] == [(c, s, s) for c, s in out]
    assert [k for k, s in enumerate(specs, 1) if s.stride == 2] == [4, 8, 14]
    assert specs[0].in_channels == 64 and specs[3].in_channels == 256 and specs[3].width == 128


def test_narrow_backbone_scales_every_width() -> None:
    specs = NARROW.block_specs()
    assert NARROW.scaled(64) == 4 and specs[0].in_channels == 4
    assert {s.width for s in specs} == {4, 8, 16, 32}
    assert specs[-1].out_channels == 128
    assert [s.out_size for s in specs] == [s.out_size for s in SpikingResNetConfig().block_specs()]


def test_backbone_block_outputs_are_binary_spikes_of_the_spec_shapes() -> None:
    torch.manual_seed(0)
    model = SpikingBackbone(NARROW, time_steps=2)  # train mode, as built: BN uses batch statistics
    x = model.stem(torch.randn(2, 3, 32, 32), model.time_steps)
    for spec, block in zip(NARROW.block_specs(), model.blocks.values(), strict=True):
        x = block(x)
        assert x.shape == (2, 2, spec.out_channels, spec.out_size, spec.out_size)
        assert ((x == 0) | (x == 1)).all()
    assert model.classifier(x).shape == (2, 10)


def assert_gradient_reaches_every_conv(model: nn.Module) -> None:
    """One train-mode backward; every conv weight, the stem's first, must get a nonzero gradient.

    Any path from the loss to the stem passes through every block's output LIF (each block ends in
    one, after the residual add), and a conv inside a block only gets a gradient through the LIF
    that follows it; so nonzero gradients everywhere mean every LIF passed its surrogate gradient.
    """
    generator = torch.Generator().manual_seed(0)
    model.train()  # batch statistics: spikes flow even though the model is untrained
    images = torch.randn(2, 3, 32, 32, generator=generator)
    loss = nn.functional.cross_entropy(model(images), torch.tensor([1, 7]))
    loss.backward()
    convs = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    silent = [name for name, m in convs.items() if m.weight.grad is None or not m.weight.grad.any()]
    assert not silent, f"no gradient reached {silent}"
    assert any(name.endswith("stem.conv") for name in convs)


def test_gradient_reaches_the_stem_of_the_backbone() -> None:
    torch.manual_seed(0)
    assert_gradient_reaches_every_conv(SpikingBackbone(NARROW, time_steps=2))


@pytest.mark.parametrize("split_point", [1, 16])  # the longest tail; the stride-2 bottleneck
def test_gradient_reaches_the_stem_through_the_bottleneck(split_point: int) -> None:
    torch.manual_seed(0)
    config = ModelConfig(backbone=NARROW).with_split(NARROW.bottleneck_preset(split_point))
    assert_gradient_reaches_every_conv(SpikeBottleNet(config))
