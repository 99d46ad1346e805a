"""The paper preset reproduces Table 1 from shapes alone; encoder/decoder geometry."""

from __future__ import annotations

import math

import pytest
import torch

from shared.bottleneck import (BOTTLENETPP_BYTES, PAPER_TRANSMITTED_BYTES, BottleneckConfig, SpikeDecoder,
                               SpikeEncoder, paper_preset)
from shared.neuron import LIFConfig
from shared.spiking_resnet import SpikingResNetConfig, block_specs
from shared.split_model import ModelConfig

# Table 1 of the paper, SpikeBottleNet row, bytes per image at RB1 .. RB16 (typed in again here,
# not imported, so that a change to the constant in the package cannot pass unnoticed)
TABLE_1_BYTES = [8192, 4096, 4096, 4096, 4096, 4096, 4096, 2048, 1024, 1024, 1024, 1024, 2048, 256, 512, 64]


@pytest.mark.parametrize("split_point", range(1, 17))
def test_paper_preset_transmits_exactly_the_table_1_bytes(split_point: int) -> None:
    config = ModelConfig().with_split(paper_preset(split_point))
    bits = math.prod(config.spike_shape)  # T * C' * H' * W' of one image
    assert bits == 8 * TABLE_1_BYTES[split_point - 1]
    assert PAPER_TRANSMITTED_BYTES[split_point - 1] == TABLE_1_BYTES[split_point - 1]


def test_derived_bottleneck_channels_and_strides() -> None:
    presets = [paper_preset(k) for k in range(1, 17)]
    assert [p.bottleneck.channels for p in presets] == [16] * 3 + [64] * 12 + [32]
    assert [p.bottleneck.stride for p in presets] == [1] * 15 + [2]
    assert ModelConfig().with_split(presets[-1]).spike_shape == (4, 32, 2, 2)


def test_rb16_compresses_its_spikes_256_times() -> None:
    rb16 = block_specs(SpikingResNetConfig())[-1]
    config = ModelConfig().with_split(paper_preset(16))
    block_bits = config.time_steps * rb16.out_channels * rb16.out_size ** 2  # 4 * 2048 * 4 * 4
    assert block_bits // math.prod(config.spike_shape) == 256
    assert block_bits % math.prod(config.spike_shape) == 0


def test_spikebottlenet_never_sends_more_than_bottlenet_plus_plus() -> None:
    assert all(ours <= theirs for ours, theirs in zip(PAPER_TRANSMITTED_BYTES, BOTTLENETPP_BYTES))
    assert len(BOTTLENETPP_BYTES) == 16


def test_narrow_preset_scales_the_channels_and_keeps_stride_and_time_steps() -> None:
    narrow = SpikingResNetConfig(width_multiplier=0.0625)
    for k in range(1, 17):
        full, small = paper_preset(k), paper_preset(k, narrow)
        assert small.bottleneck.channels == max(1, round(full.bottleneck.channels * 0.0625))
        assert (small.bottleneck.stride, small.time_steps) == (full.bottleneck.stride, full.time_steps)


@pytest.mark.parametrize("kwargs", [dict(split_point=0, channels=4), dict(split_point=17, channels=4),
                                    dict(split_point=3, channels=0), dict(split_point=3, channels=4, stride=3)])
def test_invalid_bottleneck_configs_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BottleneckConfig(**kwargs)


def test_paper_preset_refuses_split_points_outside_1_to_16() -> None:
    for k in (0, 17):
        with pytest.raises(ValueError, match="split_point"):
            paper_preset(k)


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
        ModelConfig(backbone=backbone).with_split(paper_preset(16, backbone))
