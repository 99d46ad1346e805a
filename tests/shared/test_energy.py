"""Energy accounting: firing rates, SyOPs and energies checked by hand on a tiny head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikebottlenet.shared.activity_monitor import ActivityMonitor, structural_flops
from spikebottlenet.shared.backbones import SpikingResNetConfig
from spikebottlenet.shared.energy import ConvRole, CountMode, EnergyEstimate, declare_role, estimate_energy
from spikebottlenet.shared.layers import TimeFolded
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.split_model import SplitHead
from tests.conftest import calibrated_model

T, B = 2, 2
PJ = 1e-9  # in mJ


class TinyHead(nn.Module):
    """Head-shaped: its convs carry SplitHead's qualified names and declare their roles as a
    backbone would, but the spikes they see are given.

        stem.conv                 Conv2d(3 -> 2, 3x3)              STEM      on the image [B, 3, 4, 4]
        blocks.rb1.conv1.conv     Conv2d(2 -> 3, 3x3)              BLOCK     on block spikes [T, B, 2, 4, 4]
        blocks.rb1.shortcut.conv  Conv2d(2 -> 4, 1x1, stride 2)    SHORTCUT  on the same block spikes
        encoder.conv              Conv2d(1 -> 1, 3x3, stride 2)    ENCODER   on encoder spikes [T, B, 1, 4, 4]
    """

    def __init__(self, block_spikes: torch.Tensor, encoder_spikes: torch.Tensor) -> None:
        super().__init__()
        self.stem = nn.ModuleDict({"conv": declare_role(nn.Conv2d(3, 2, 3, padding=1, bias=False), ConvRole.STEM)})
        self.blocks = nn.ModuleDict(
            {
                "rb1": nn.ModuleDict(
                    {
                        "conv1": nn.ModuleDict(
                            {
                                "conv": TimeFolded(
                                    declare_role(nn.Conv2d(2, 3, 3, padding=1, bias=False), ConvRole.BLOCK)
                                )
                            }
                        ),
                        "shortcut": nn.ModuleDict(
                            {
                                "conv": TimeFolded(
                                    declare_role(nn.Conv2d(2, 4, 1, stride=2, bias=False), ConvRole.SHORTCUT)
                                )
                            }
                        ),
                    }
                )
            }
        )
        self.encoder = nn.ModuleDict(
            {"conv": TimeFolded(declare_role(nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False), ConvRole.ENCODER))}
        )
        self.block_spikes, self.encoder_spikes = block_spikes, encoder_spikes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.stem["conv"](image)
        rb1 = self.blocks["rb1"]
        rb1["conv1"]["conv"](self.block_spikes)
        rb1["shortcut"]["conv"](self.block_spikes)
        return self.encoder["conv"](self.encoder_spikes)


@pytest.fixture
def tiny_head() -> TinyHead:
    block = torch.zeros(T, B, 2, 4, 4)  # 32 neurons per step
    block[1, 0].view(-1)[:4] = 1  # image 0: 4 spikes, all at t = 1
    block[0, 1].view(-1)[:10] = 1  # image 1: 10 + 6 = 16 spikes
    block[1, 1].view(-1)[:6] = 1
    encoder = torch.zeros(T, B, 1, 4, 4)  # 16 neurons per step
    encoder[0, 0].view(-1)[:8] = 1  # image 0: 8 spikes; image 1: none
    return TinyHead(block, encoder)


def run(head: nn.Module, mode: CountMode) -> ActivityMonitor:
    with ActivityMonitor(head, time_steps=T, mode=mode) as monitor:
        head(torch.zeros(B, 3, 4, 4))
    return monitor


# per image, per time step: output elements x C_in x k_h x k_w
STEM_FLOPS = (2 * 4 * 4) * 3 * 3 * 3  # 864, real-valued input, counted once
CONV1_FLOPS = (3 * 4 * 4) * 2 * 3 * 3  # 864
SHORTCUT_FLOPS = (4 * 2 * 2) * 2  # 32
ENCODER_FLOPS = (1 * 2 * 2) * 1 * 3 * 3  # 36


def test_declared_roles_are_recorded(tiny_head: TinyHead) -> None:
    monitor = run(tiny_head, CountMode.COMPLETE)
    assert [(layer.name, layer.role) for layer in monitor.layers] == [
        ("stem.conv", "stem"),
        ("blocks.rb1.conv1.conv", "block"),
        ("blocks.rb1.shortcut.conv", "shortcut"),
        ("encoder.conv", "encoder"),
    ]


def test_a_real_resnet_head_declares_the_role_of_every_conv() -> None:
    # RB1 (64 -> 256 channels at full width) and RB4 (stride 2) have projection shortcuts; RB2, RB3 do not
    backbone = SpikingResNetConfig(width_multiplier=0.0625, num_classes=10)
    config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(4))
    head = SplitHead(config).eval()
    with ActivityMonitor(head, config.time_steps, CountMode.COMPLETE) as monitor, torch.no_grad():
        head(torch.zeros(1, 3, 32, 32))

    def block(rb: str, shortcut: bool) -> list[tuple[str, ConvRole]]:
        convs = [(f"blocks.{rb}.conv{i}.conv", ConvRole.BLOCK) for i in (1, 2, 3)]
        return convs + ([(f"blocks.{rb}.shortcut.conv", ConvRole.SHORTCUT)] if shortcut else [])

    assert [(layer.name, layer.role) for layer in monitor.layers] == [
        ("stem.conv", ConvRole.STEM),
        *block("rb1", True),
        *block("rb2", False),
        *block("rb3", False),
        *block("rb4", True),
        ("encoder.conv", ConvRole.ENCODER),
    ]
    assert all(isinstance(layer.role, ConvRole) for layer in monitor.layers)


def test_a_conv_without_a_declared_role_is_refused(tiny_head: TinyHead) -> None:
    tiny_head.blocks["rb1"]["extra"] = nn.Conv2d(2, 2, 1, bias=False)  # no declare_role
    monitor = ActivityMonitor(tiny_head, time_steps=T)
    with pytest.raises(ValueError, match=r"'blocks\.rb1\.extra' declares no energy role"):
        monitor.__enter__()
    tiny_head(torch.zeros(B, 3, 4, 4))
    assert monitor.layers == []  # the refused monitor left no hooks behind on the convs it had reached
    with pytest.raises(ValueError, match="declares no energy role"):
        with ActivityMonitor(nn.Sequential(nn.Conv2d(3, 1, 1)), time_steps=T):
            pass


def test_paper_mode_counts_only_the_block_convs(tiny_head: TinyHead) -> None:
    monitor = run(tiny_head, CountMode.PAPER)
    assert [layer.name for layer in monitor.counted()] == ["blocks.rb1.conv1.conv"]
    first, second = monitor.estimates()
    assert first.flops == second.flops == CONV1_FLOPS
    # SyOPs = spikes / neurons * FLOPs;  firing rate = spikes / (T * neurons)
    assert first.syops == pytest.approx(4 / 32 * CONV1_FLOPS)  # 108
    assert second.syops == pytest.approx(16 / 32 * CONV1_FLOPS)  # 432
    assert first.firing_rate == pytest.approx(4 / (T * 32))
    assert second.firing_rate == pytest.approx(16 / (T * 32))
    assert first.device_45nm_mj == pytest.approx(108 * 0.9 * PJ)
    assert first.device_rolls_mj == pytest.approx(108 * 0.077 * PJ)
    assert first.ann_baseline_45nm_mj == pytest.approx(CONV1_FLOPS * 4.6 * PJ)


def test_estimates_average_field_by_field(tiny_head: TinyHead) -> None:
    first, second = run(tiny_head, CountMode.PAPER).estimates()
    mean = EnergyEstimate.mean([first, second])
    assert mean.flops == CONV1_FLOPS
    assert mean.syops == pytest.approx((108 + 432) / 2)
    assert mean.firing_rate == pytest.approx((4 + 16) / 2 / (T * 32))
    assert mean.device_45nm_mj == pytest.approx((108 + 432) / 2 * 0.9 * PJ)
    with pytest.raises(ValueError):
        EnergyEstimate.mean([])


def test_complete_mode_adds_stem_shortcut_and_encoder(tiny_head: TinyHead) -> None:
    monitor = run(tiny_head, CountMode.COMPLETE)
    first, second = monitor.estimates()
    assert first.flops == STEM_FLOPS + CONV1_FLOPS + SHORTCUT_FLOPS + ENCODER_FLOPS == 1796
    # image 0: 4 block spikes (conv1 and shortcut each see them) and 8 encoder spikes
    syops_0 = 4 / 32 * CONV1_FLOPS + 4 / 32 * SHORTCUT_FLOPS + 8 / 16 * ENCODER_FLOPS  # 108 + 4 + 18
    syops_1 = 16 / 32 * CONV1_FLOPS + 16 / 32 * SHORTCUT_FLOPS  # 432 + 16
    assert (first.syops, second.syops) == (pytest.approx(syops_0), pytest.approx(syops_1))
    neuron_steps = T * (32 + 32 + 16)
    assert first.firing_rate == pytest.approx((4 + 4 + 8) / neuron_steps)
    assert second.firing_rate == pytest.approx((16 + 16) / neuron_steps)
    # the stem sees real values: multiply-accumulates at 4.6 pJ, on top of the spiking layers
    assert first.device_45nm_mj == pytest.approx((130 * 0.9 + STEM_FLOPS * 4.6) * PJ)
    assert first.device_rolls_mj == pytest.approx((130 * 0.077 + STEM_FLOPS * 4.6) * PJ)
    assert first.ann_baseline_45nm_mj == pytest.approx(1796 * 4.6 * PJ)


def test_counts_need_a_column_per_spiking_conv(tiny_head: TinyHead) -> None:
    layers = run(tiny_head, CountMode.COMPLETE).layers  # three spiking convs after the stem
    with pytest.raises(ValueError, match=r"expected \[B, 3\], one column per spiking conv"):
        estimate_energy(layers, np.zeros((B, 2)), T, CountMode.COMPLETE)


def test_hooks_are_removed_on_exit(tiny_head: TinyHead) -> None:
    monitor = run(tiny_head, CountMode.PAPER)
    tiny_head(torch.zeros(B, 3, 4, 4))
    assert len(monitor.layers) == 4


def hand_flops(backbone: SpikingResNetConfig, split_point: int, mode: CountMode) -> int:
    """FLOPs of a head from the block geometry, written out layer by layer."""
    config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(split_point))
    complete = mode is CountMode.COMPLETE
    size = backbone.image_size
    total = backbone.scaled(64) * size * size * 3 * 9 if complete else 0
    for spec in backbone.block_specs()[:split_point]:
        out = spec.out_size
        total += spec.width * size * size * spec.in_channels  # conv1, 1x1 at the input size
        total += spec.width * out * out * spec.width * 9  # conv2, 3x3 with the block's stride
        total += spec.out_channels * out * out * spec.width  # conv3, 1x1
        if complete and (spec.stride != 1 or spec.in_channels != spec.out_channels):
            total += spec.out_channels * out * out * spec.in_channels  # projection shortcut, 1x1
        size = out
    if complete:
        _, channels, height, width = config.spike_shape
        total += channels * height * width * backbone.block_specs()[split_point - 1].out_channels * 9
    return total


@pytest.mark.parametrize("mode", list(CountMode))
@pytest.mark.parametrize("width_multiplier", [0.125, 1.0])
def test_structural_flops_on_meta_match_the_hand_count(mode: CountMode, width_multiplier: float) -> None:
    backbone = SpikingResNetConfig(width_multiplier=width_multiplier)
    for split_point in (1, 4, 8, 13, 16):
        config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(split_point))
        with torch.device("meta"):
            head = SplitHead(config)
        flops = structural_flops(head, config.time_steps, backbone.image_size, mode)
        assert flops == hand_flops(backbone, split_point, mode), f"RB{split_point}"


def test_meta_heads_record_no_spikes() -> None:
    with torch.device("meta"):
        head = SplitHead(ModelConfig().with_split(SpikingResNetConfig().bottleneck_preset(2)))
    with ActivityMonitor(head, time_steps=2) as monitor, torch.no_grad():
        head(torch.zeros(1, 3, 32, 32, device="meta"))
    with pytest.raises(RuntimeError, match="no spikes"):
        monitor.estimates()


def test_measured_activity_of_a_real_head_agrees_with_its_structure() -> None:
    head = calibrated_model(split_point=4).head
    config = head.config
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    head.train()  # structural_flops must leave a training head's BN statistics alone
    before = {k: v.clone() for k, v in head.state_dict().items()}
    flops = structural_flops(head, config.time_steps, 32, CountMode.COMPLETE)
    assert head.training and all(torch.equal(v, before[k]) for k, v in head.state_dict().items())
    head.eval()
    with ActivityMonitor(head, config.time_steps, CountMode.COMPLETE) as monitor, torch.no_grad():
        head(images)
    estimates = monitor.estimates()
    assert [e.flops for e in estimates] == [flops, flops]
    for e in estimates:
        assert 0 < e.firing_rate < 1
        assert 0 < e.syops < flops * config.time_steps  # each of T steps does at most its FLOPs
        assert e.device_45nm_mj < e.ann_baseline_45nm_mj
