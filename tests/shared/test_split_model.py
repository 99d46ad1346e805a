"""Head and tail, built and loaded separately as device and edge do, reproduce the whole model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from shared.bottleneck import paper_preset
from shared.checkpoint import load_checkpoint
from shared.codec import decode, encode
from shared.spiking_resnet import SpikingResNet, SpikingResNetConfig
from shared.split_model import ModelConfig, SpikeBottleNet, build_model


@pytest.mark.parametrize("split_point", range(1, 17))
def test_tail_of_head_equals_the_monolithic_forward(split_point: int,
                                                    calibrated_checkpoint: Callable[..., Path]) -> None:
    path = calibrated_checkpoint(split_point)
    full, head, tail = (load_checkpoint(path, part).model for part in ("full", "head", "tail"))
    config = full.config
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(split_point))
    with torch.no_grad():
        spikes = head(images)  # [T, B, C', H', W']
        T, *per_image = config.spike_shape
        assert spikes.shape == (T, 2, *per_image)
        assert ((spikes == 0) | (spikes == 1)).all() and spikes.any()
        # the wire: the edge only ever sees the decoded payload
        codec, payload = encode(spikes, "auto")
        received = decode(payload, tuple(spikes.shape), codec)
        assert torch.equal(tail(received), full(images))


def test_load_backbone_puts_every_backbone_tensor_in_head_or_tail() -> None:
    backbone_config = SpikingResNetConfig(width_multiplier=0.0625, num_classes=10)
    torch.manual_seed(0)
    backbone = SpikingResNet(backbone_config, time_steps=2)
    model = SpikeBottleNet(ModelConfig(backbone=backbone_config).with_split(paper_preset(5, backbone_config)))
    model.load_backbone(backbone)
    split_state = {**model.head.state_dict(), **model.tail.state_dict()}
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(split_state[name], tensor), name
    new = {name.split(".")[0] for name in set(split_state) - set(backbone.state_dict())}
    assert new == {"encoder", "decoder"}  # everything else came from the backbone


def test_model_config_round_trips_through_its_dict() -> None:
    backbone = SpikingResNetConfig(width_multiplier=0.125, num_classes=3)
    config = ModelConfig(backbone=backbone, labels=("cat", "dog", "eel")).with_split(paper_preset(16, backbone))
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.label(2) == "eel" and ModelConfig().label(7) == "class 7"


def test_model_config_refuses_wrong_label_count_and_splitting_a_backbone() -> None:
    with pytest.raises(ValueError, match="labels"):
        ModelConfig(labels=("a", "b"))
    with pytest.raises(ValueError, match="no bottleneck"):
        _ = ModelConfig().spike_shape
    with pytest.raises(ValueError, match="unknown model part"):
        build_model(ModelConfig(), "middle")
