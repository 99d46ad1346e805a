"""Head and tail, built and loaded separately as device and edge do, reproduce the whole model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from spikebottlenet.shared.backbones import BACKBONES, SpikingMobileNetV2Config, SpikingResNetConfig
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.codec import encode
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.spike_tensors import decode
from spikebottlenet.shared.split_model import SpikeBottleNet, build_model

SPLITS = [(arch, point.index) for arch, cls in BACKBONES.items() for point in cls().split_points()]


def reference_forward(model: SpikeBottleNet, images: torch.Tensor) -> torch.Tensor:
    """The whole backbone's own forward, written out block by block, with the bottleneck applied
    after the split block: the backbone's code path, not the head/tail slicing under test."""
    config = model.config
    backbone = SpikingBackbone(config.backbone, config.time_steps).eval()
    backbone.load_state_dict(
        {
            k: v
            for half in (model.head, model.tail)
            for k, v in half.state_dict().items()
            if not k.startswith(("encoder.", "decoder."))
        }
    )
    x = backbone.stem(images, config.time_steps)  # [T, B, C, H, W]
    for point in config.backbone.split_points():
        x = backbone.blocks[point.key](x)
        if point.index == config.bottleneck.split_point:
            x = model.tail.decoder(model.head.encoder(x))
    return backbone.forward_head(x)


@pytest.mark.parametrize("arch, split_point", SPLITS, ids=[f"{a}-{k}" for a, k in SPLITS])
def test_tail_of_head_equals_the_backbone_forward_with_the_bottleneck(
    arch: str, split_point: int, calibrated_checkpoint: Callable[..., Path]
) -> None:
    path = calibrated_checkpoint(split_point, arch=arch)
    full, head, tail = (load_checkpoint(path, part).model for part in ("full", "head", "tail"))
    config = full.config
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(split_point))
    with torch.no_grad():
        spikes = head(images)  # [T, B, C', H', W']
        T, *per_image = config.spike_shape
        assert spikes.shape == (T, 2, *per_image)
        # in inference the encoder's spikes are bools, a byte each (what the codec packs)
        assert spikes.dtype == torch.bool
        # calibrated BN statistics: the bottleneck really fires, so the comparison is not of silence
        assert 0 < spikes.float().mean() < 1
        # the wire: the edge only ever sees the decoded payload
        codec, payload = encode(spikes, "auto")
        received = decode(payload, tuple(spikes.shape), codec)
        logits = tail(received)
        assert torch.equal(logits, reference_forward(full, images))
        assert logits.std() > 0  # not a constant answer


def test_load_backbone_puts_every_backbone_tensor_in_head_or_tail() -> None:
    for backbone_config in (
        SpikingResNetConfig(width_multiplier=0.0625, num_classes=10),
        SpikingMobileNetV2Config(width_multiplier=0.25, num_classes=10),
    ):
        torch.manual_seed(0)
        backbone = SpikingBackbone(backbone_config, time_steps=2)
        model = SpikeBottleNet(ModelConfig(backbone=backbone_config).with_split(backbone_config.bottleneck_preset(5)))
        model.load_backbone(backbone)
        split_state = {**model.head.state_dict(), **model.tail.state_dict()}
        for name, tensor in backbone.state_dict().items():
            assert torch.equal(split_state[name], tensor), name
        new = {name.split(".")[0] for name in set(split_state) - set(backbone.state_dict())}
        assert new == {"encoder", "decoder"}  # everything else came from the backbone


def test_load_backbone_refuses_another_backbone() -> None:
    resnet = SpikingResNetConfig(width_multiplier=0.0625, num_classes=10)
    mobilenet = SpikingMobileNetV2Config(width_multiplier=0.25, num_classes=10)
    model = SpikeBottleNet(ModelConfig(backbone=mobilenet).with_split(mobilenet.bottleneck_preset(5)))
    with pytest.raises(ValueError, match="spiking_resnet50"):
        model.load_backbone(SpikingBackbone(resnet, time_steps=1))


@pytest.mark.parametrize(
    "backbone",
    [
        SpikingResNetConfig(width_multiplier=0.125, num_classes=3),
        SpikingMobileNetV2Config(width_multiplier=0.5, num_classes=3),
    ],
)
def test_model_config_round_trips_through_its_dict(backbone) -> None:
    config = ModelConfig(backbone=backbone, labels=("cat", "dog", "eel")).with_split(backbone.bottleneck_preset(3))
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["backbone"]["arch"] == backbone.ARCH
    assert config.label(2) == "eel" and ModelConfig().label(7) == "class 7"


def test_model_config_refuses_wrong_label_count_and_splitting_a_backbone() -> None:
    with pytest.raises(ValueError, match="labels"):
        ModelConfig(labels=("a", "b"))
    with pytest.raises(ValueError, match="no bottleneck"):
        _ = ModelConfig().spike_shape
    with pytest.raises(ValueError, match="unknown model part"):
        build_model(ModelConfig(), "middle")
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "backbone": {"arch": "vgg16"}})


def test_geometry_of_a_split() -> None:
    config = ModelConfig(backbone=SpikingMobileNetV2Config()).with_split(
        SpikingMobileNetV2Config().bottleneck_preset(8)
    )
    geometry = config.geometry()
    # IRB8: 64 x 8 x 8 spikes; the rule's bottleneck: T = 2, C' = 4, same H, W
    assert (geometry.point.name, geometry.spike_shape) == ("IRB8", (2, 4, 8, 8))
    assert geometry.transmitted_bytes == 2 * 4 * 8 * 8 // 8
    assert geometry.uncompressed_bytes == 2 * 64 * 8 * 8 // 8
    assert geometry.float32_feature_bytes == 64 * 8 * 8 * 4
    assert geometry.compression == 16
