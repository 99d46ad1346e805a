"""Spike ResNet50 geometry, the surrogate gradient reaching the stem through every LIF, and the fused LIF
inference pass giving the step-by-step reference's outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikebottlenet.shared.activity_monitor import ActivityMonitor
from spikebottlenet.shared.backbones import SpikingResNetConfig
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.shared.energy import CountMode
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.neuron import LIF, use_fused_inference
from spikebottlenet.shared.split_model import SpikeBottleNet
from spikebottlenet.shared.td_batch_norm import TdBatchNorm

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


def test_the_paper_preset_refuses_an_image_size_its_bytes_do_not_fit() -> None:
    # 8192 bytes at RB1, T=4, cannot be C' whole channels of 48 x 48 (a ValueError also under python -O)
    with pytest.raises(ValueError, match="do not divide"):
        SpikingResNetConfig(image_size=48).bottleneck_preset(1)


def assert_fused_inference_is_the_reference(config: ModelConfig) -> None:
    """An eval forward with the fused LIF pass and with every LIF on its step-by-step loop (tdBN and
    residual add as modules and tensor operations): the same logits bit for bit, the same spikes out of
    every LIF, the same measured energy."""
    torch.manual_seed(0)
    model = SpikeBottleNet(config)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # the running statistics of one train-mode batch (momentum None: exactly its own), so that in eval
    # the neurons fire as in a trained model, neither never nor always
    for bn in (m for m in model.modules() if isinstance(m, TdBatchNorm)):
        bn.momentum = None
    with torch.no_grad():
        model.train()(images)
    model.eval()
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    runs = {}
    for fused in (True, False):
        use_fused_inference(model, fused)
        spikes: list[torch.Tensor] = []
        handles = [
            lif.register_forward_hook(lambda module, inputs, out, spikes=spikes: spikes.append(out)) for lif in lifs
        ]
        with ActivityMonitor(model.head, config.time_steps, CountMode.COMPLETE) as monitor, torch.inference_mode():
            logits = model(images)
        for handle in handles:
            handle.remove()
        runs[fused] = logits, spikes, monitor.estimates()
    (fused_logits, fused_spikes, fused_energy), (logits, spikes, energy) = runs[True], runs[False]
    assert torch.equal(fused_logits, logits)
    assert len(fused_spikes) == len(spikes) == len(lifs)
    assert all(torch.equal(a, b) for a, b in zip(fused_spikes, spikes, strict=True))
    assert fused_energy == energy
    # the comparison has teeth: most LIFs fire on some neurons and steps but not all
    assert sum(0 < s.float().mean() < 1 for s in spikes) > 0.9 * len(lifs)


@pytest.mark.parametrize("split_point", [3, 16])  # full-resolution blocks; the paper's stride-2 bottleneck
def test_fused_inference_gives_the_reference_outputs(split_point: int) -> None:
    config = ModelConfig(backbone=NARROW).with_split(NARROW.bottleneck_preset(split_point))
    assert_fused_inference_is_the_reference(config)
