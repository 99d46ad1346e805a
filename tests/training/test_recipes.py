"""Fine-tuning starts from the pre-trained backbone, adds the bottleneck, and records what it did."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from shared.bottleneck import BottleneckConfig, SplitPreset, paper_preset
from shared.checkpoint import load_checkpoint, read_checkpoint_info
from shared.spiking_resnet import SpikingResNetConfig
from shared.split_model import ModelConfig, SpikeBottleNet
from tests.training.conftest import TINY_TRAIN
from training.datasets import Dataset
from training.recipes import SplitStats, finetune, split_model
from training.runtime import Runtime

SPLIT_POINT = 8


def test_backbone_checkpoint_records_its_accuracy(tiny_backbone: Path) -> None:
    ckpt = read_checkpoint_info(tiny_backbone)
    assert ckpt.config.bottleneck is None and ckpt.trained
    assert ckpt.info["dataset"] == "digits" and 0 <= ckpt.info["test_accuracy"] <= 100
    assert ckpt.config.labels == tuple("0123456789")


def test_split_model_starts_from_every_backbone_tensor(tiny_backbone: Path) -> None:
    base = load_checkpoint(tiny_backbone)
    preset = paper_preset(SPLIT_POINT, base.config.backbone)
    model = split_model(base, preset)
    split_state = {**model.head.state_dict(), **model.tail.state_dict()}
    for name, tensor in base.model.state_dict().items():
        assert torch.equal(split_state[name], tensor), name
    new = set(split_state) - set(base.model.state_dict())
    assert new and all(n.startswith(("encoder.", "decoder.")) for n in new)
    assert model.config.bottleneck == preset.bottleneck and model.config.time_steps == preset.time_steps
    assert model.head.encoder.conv.module.out_channels == preset.bottleneck.channels


def test_finetune_writes_a_split_checkpoint_with_its_accuracy_drop(tiny_backbone: Path, tiny_digits: Dataset,
                                                                   cpu: Runtime, tmp_path: Path) -> None:
    preset = SplitPreset(BottleneckConfig(SPLIT_POINT, channels=2, stride=2), time_steps=1)
    out = tmp_path / "rb8.safetensors"
    model, info = finetune(tiny_digits, tiny_backbone, preset, TINY_TRAIN, cpu, out)
    loaded = load_checkpoint(out)
    assert loaded.fingerprint == info["fingerprint"]
    assert isinstance(loaded.model, SpikeBottleNet) and loaded.config.bottleneck == preset.bottleneck
    recorded = loaded.checkpoint.info
    pretrained = read_checkpoint_info(tiny_backbone).info["test_accuracy"]
    assert recorded["trained"] is True and recorded["dataset"] == "digits"
    assert recorded["pretrained_accuracy"] == pretrained
    assert recorded["accuracy_drop"] == pytest.approx(pretrained - recorded["test_accuracy"], abs=0.01)
    assert recorded["transmitted_bytes"] == SplitStats.of(loaded.config).transmitted_bytes
    assert recorded["command"] and recorded["pretrained_fingerprint"] == load_checkpoint(tiny_backbone).fingerprint
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)


def test_finetune_refuses_a_backbone_from_another_dataset(tiny_backbone: Path, tiny_digits: Dataset,
                                                          cpu: Runtime, tmp_path: Path) -> None:
    other = dataclasses.replace(tiny_digits, name="cifar100")
    with pytest.raises(ValueError, match="pre-trained on 'digits'"):
        finetune(other, tiny_backbone, paper_preset(SPLIT_POINT), TINY_TRAIN, cpu, tmp_path / "x.safetensors")


def test_split_stats_at_rb16_are_the_papers_256x() -> None:
    for width in (1.0, 0.125, 0.0625):
        backbone = SpikingResNetConfig(width_multiplier=width)
        stats = SplitStats.of(ModelConfig(backbone=backbone).with_split(paper_preset(16, backbone)))
        assert stats.compression == 256
    assert SplitStats.of(ModelConfig().with_split(paper_preset(16))).transmitted_bytes == 64
