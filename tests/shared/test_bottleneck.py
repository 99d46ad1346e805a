"""The paper's bottleneck rule at every split point of both backbones, from shapes alone; encoder/decoder geometry."""

from __future__ import annotations

import math

import pytest
import torch

from spikebottlenet.shared.backbones import SpikingMobileNetV2Config, SpikingResNetConfig
from spikebottlenet.shared.backbones.spiking_resnet import BOTTLENETPP_BYTES, PAPER_TRANSMITTED_BYTES
from spikebottlenet.shared.bottleneck import BottleneckConfig
from spikebottlenet.shared.lif_config import LIFConfig
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.split_model import SpikeDecoder, SpikeEncoder

RESNET, MOBILENET = SpikingResNetConfig(), SpikingMobileNetV2Config()

# Table 1 of the paper, SpikeBottleNet row, bytes per image at RB1 .. RB16 (typed in again here,
# not imported, so that a change to the constant in the package cannot pass unnoticed)
TABLE_1_BYTES = [8192, 4096, 4096, 4096, 4096, 4096, 4096, 2048, 1024, 1024, 1024, 1024, 2048, 256, 512, 64]

# The rule written out per split point, (C', H', W', T), at full width and 32x32 input.
# ResNet50: block outputs 256x32x32 (RB1-3), 512x16x16 (RB4-7), 1024x8x8 (RB8-13), 2048x4x4 (RB14-16);
# Table 1's compression is 16x, except 8x at RB4-7, 32x at RB14-15 and 256x at RB16, where the
# stride-2 encoder halves H and W: C' = C*H*W / (compression*H'*W').
RESNET_RULE = (
    [(256 // 16, 32, 32, t) for t in (4, 2, 2)]
    + [(512 // 8, 16, 16, 2)] * 4
    + [(1024 // 16, 8, 8, t) for t in (4, 2, 2, 2, 2, 4)]
    + [(2048 // 32, 4, 4, 2), (2048 // 32, 4, 4, 4), (2048 * 16 // (256 * 4), 2, 2, 4)]
)
# MobileNetV2: block outputs 16x32x32 (IRB1), 24x32x32 (IRB2-3), 32x16x16 (IRB4-6), 64x8x8 (IRB7-10),
# 96x8x8 (IRB11-13), 160x4x4 (IRB14-16), 320x4x4 (IRB17). IRBk takes the compression of RB j,
# j = round(16k/17): 16x for j in 1-3 and 8-13, 8x for 4-7, 32x for 14-15, 256x for 16;
# T = 2 for k <= 8 (the early half of 17), else 4; stride 2 only at IRB17.
MOBILENET_COMPRESSION = [16, 16, 16, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 32, 32, 256]
MOBILENET_BLOCKS = (
    [(16, 32)] + [(24, 32)] * 2 + [(32, 16)] * 3 + [(64, 8)] * 4 + [(96, 8)] * 3 + [(160, 4)] * 3 + [(320, 4)]
)


def mobilenet_rule(k: int) -> tuple[int, int, int, int]:
    channels, size = MOBILENET_BLOCKS[k - 1]
    out = size // 2 if k == 17 else size
    c = max(1, round(channels * size * size / (MOBILENET_COMPRESSION[k - 1] * out * out)))
    return (c, out, out, 2 if k <= 8 else 4)


@pytest.mark.parametrize("split_point", range(1, 17))
def test_resnet_preset_transmits_exactly_the_table_1_bytes(split_point: int) -> None:
    config = ModelConfig().with_split(RESNET.bottleneck_preset(split_point))
    bits = math.prod(config.spike_shape)  # T * C' * H' * W' of one image
    assert bits == 8 * TABLE_1_BYTES[split_point - 1]
    assert PAPER_TRANSMITTED_BYTES[split_point - 1] == TABLE_1_BYTES[split_point - 1]


@pytest.mark.parametrize(
    "backbone, rule",
    [(RESNET, lambda k: RESNET_RULE[k - 1]), (MOBILENET, mobilenet_rule)],
    ids=["resnet50", "mobilenetv2"],
)
def test_preset_follows_the_rule_at_every_split_point(backbone, rule) -> None:
    for point in backbone.split_points():
        preset = backbone.bottleneck_preset(point.index)
        _, c, h, w = ModelConfig(backbone=backbone).with_split(preset).spike_shape
        assert (c, h, w, preset.time_steps) == rule(point.index), point.name
        last = point.index == len(backbone.split_points())
        assert preset.bottleneck.stride == (2 if last else 1), point.name


def test_mobilenet_written_out_values() -> None:
    # a few points spelled out in full, so that the helper above cannot hide a shared mistake
    assert mobilenet_rule(1) == (1, 32, 32, 2)  # 16 channels / 16
    assert mobilenet_rule(2) == (2, 32, 32, 2)  # 24 / 16 = 1.5, rounded to 2 (12x)
    assert mobilenet_rule(8) == (4, 8, 8, 2)  # 64 / 16
    assert mobilenet_rule(9) == (4, 8, 8, 4)
    assert mobilenet_rule(17) == (5, 2, 2, 4)  # 320*16 / (256*4) = 5: the paper's 256x at the last block


def test_both_last_split_points_compress_their_spikes_256_times() -> None:
    for backbone in (RESNET, MOBILENET):
        last = backbone.split_points()[-1]
        config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(last.index))
        block_bits = config.time_steps * last.channels * last.height * last.width
        assert block_bits / math.prod(config.spike_shape) == 256


def test_spikebottlenet_never_sends_more_than_bottlenet_plus_plus() -> None:
    assert all(ours <= theirs for ours, theirs in zip(PAPER_TRANSMITTED_BYTES, BOTTLENETPP_BYTES, strict=True))
    assert [RESNET.bottlenetpp_bytes(k) for k in range(1, 17)] == list(BOTTLENETPP_BYTES)
    # the paper's figures describe only its full-width ResNet50
    assert SpikingResNetConfig(width_multiplier=0.5).bottlenetpp_bytes(1) is None
    assert MOBILENET.bottlenetpp_bytes(1) is None


def test_narrow_preset_keeps_the_compression_stride_and_time_steps() -> None:
    for full in (RESNET, MOBILENET):
        narrow = type(full)(width_multiplier=0.0625)
        for point in full.split_points():
            wide, small = full.bottleneck_preset(point.index), narrow.bottleneck_preset(point.index)
            assert (small.bottleneck.stride, small.time_steps) == (wide.bottleneck.stride, wide.time_steps)
            c = narrow.split_point(point.index).channels
            # the same compression, C' = C / (full C / full C'), rounded, at least one channel
            assert small.bottleneck.channels == max(1, round(c * wide.bottleneck.channels / point.channels))


@pytest.mark.parametrize(
    "kwargs",
    [dict(split_point=0, channels=4), dict(split_point=3, channels=0), dict(split_point=3, channels=4, stride=3)],
)
def test_invalid_bottleneck_configs_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BottleneckConfig(**kwargs)


def test_split_points_outside_the_backbone_are_refused() -> None:
    for backbone, k in ((RESNET, 0), (RESNET, 17), (MOBILENET, 18)):
        with pytest.raises(ValueError, match="has no split point"):
            backbone.bottleneck_preset(k)
    with pytest.raises(ValueError, match="has no split point 17"):
        ModelConfig(bottleneck=BottleneckConfig(split_point=17, channels=4))
    ModelConfig(backbone=MOBILENET, bottleneck=BottleneckConfig(split_point=17, channels=4))  # IRB17 exists


@pytest.mark.parametrize("stride", [1, 2])
def test_decoder_restores_the_block_shape(stride: int) -> None:
    config = BottleneckConfig(split_point=4, channels=3, stride=stride)
    encoder, decoder = SpikeEncoder(16, config, LIFConfig()), SpikeDecoder(16, config, LIFConfig())
    x = (torch.rand(2, 2, 16, 8, 8) < 0.3).float()  # [T, B, C, H, W]
    sent = encoder(x)
    assert sent.shape == (2, 2, 3, 8 // stride, 8 // stride)
    assert decoder(sent).shape == x.shape


def test_stride_two_bottleneck_on_an_odd_block_size_is_refused():
    # 24x24 inputs give RB16 a 3x3 output, which a stride-2 encoder/decoder pair cannot round-trip
    backbone = SpikingResNetConfig(image_size=24)
    with pytest.raises(ValueError, match="needs an even block size"):
        ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(16))
