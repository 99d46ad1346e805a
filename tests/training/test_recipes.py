"""Fine-tuning starts from the pre-trained backbone, adds the bottleneck, and records what it did."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from spikebottlenet.shared.backbones import SpikingMobileNetV2Config, SpikingResNetConfig
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.shared.bottleneck import BottleneckConfig, SplitPreset
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import read_checkpoint_info
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.split_model import SpikeBottleNet
from spikebottlenet.training.datasets import Dataset
from spikebottlenet.training.recipes import calibrate_checkpoint, damp_residual_branches, finetune, split_model
from spikebottlenet.training.runtime import Runtime
from tests.training.conftest import TINY_TRAIN

SPLIT_POINT = 8


def test_backbone_checkpoint_records_its_accuracy(tiny_backbone: Path) -> None:
    ckpt = read_checkpoint_info(tiny_backbone)
    assert ckpt.config.bottleneck is None and ckpt.trained
    assert ckpt.info.dataset == "digits" and 0 <= ckpt.info.test_accuracy <= 100
    assert ckpt.config.labels == tuple("0123456789")


def test_split_model_starts_from_every_backbone_tensor(tiny_backbone: Path) -> None:
    base = load_checkpoint(tiny_backbone)
    preset = base.config.backbone.bottleneck_preset(SPLIT_POINT)
    model = split_model(base, preset)
    split_state = {**model.head.state_dict(), **model.tail.state_dict()}
    for name, tensor in base.model.state_dict().items():
        assert torch.equal(split_state[name], tensor), name
    new = set(split_state) - set(base.model.state_dict())
    assert new and all(n.startswith(("encoder.", "decoder.")) for n in new)
    assert model.config.bottleneck == preset.bottleneck and model.config.time_steps == preset.time_steps
    assert model.head.encoder.conv.module.out_channels == preset.bottleneck.channels


def test_finetune_writes_a_split_checkpoint_with_its_accuracy_drop(
    tiny_backbone: Path, tiny_digits: Dataset, cpu: Runtime, tmp_path: Path
) -> None:
    preset = SplitPreset(BottleneckConfig(SPLIT_POINT, channels=2, stride=2), time_steps=1)
    out = tmp_path / "rb8.safetensors"
    model, returned = finetune(tiny_digits, tiny_backbone, preset, TINY_TRAIN, cpu, out)
    loaded = load_checkpoint(out)
    assert isinstance(loaded.model, SpikeBottleNet) and loaded.config.bottleneck == preset.bottleneck
    recorded = loaded.checkpoint.info
    assert recorded == returned and loaded.checkpoint.info_verified
    pretrained = read_checkpoint_info(tiny_backbone).info.test_accuracy
    assert recorded.trained is True and recorded.dataset == "digits" and recorded.stage == "finetune"
    assert recorded.pretrained_accuracy == pretrained
    assert recorded.accuracy_drop == pytest.approx(pretrained - recorded.test_accuracy, abs=0.01)
    # the "uncertain" threshold, recounted here from the saved model's own validation-split logits (the
    # digits validate on their test split)
    with torch.no_grad():
        probabilities = loaded.model.eval()(tiny_digits.normalize(tiny_digits.validation.images)).softmax(-1)
    msp = probabilities.max(-1).values.tolist()
    threshold = recorded.uncertainty.threshold
    flagged = sum(p < threshold for p in msp)
    assert flagged <= 0.02 * len(msp) and recorded.uncertainty.calibration_images == len(msp)
    assert threshold in [pytest.approx(p) for p in msp]  # a score itself, the highest that flags <= 2 %
    assert loaded.config.input_style == "digits"

    recalibrated = calibrate_checkpoint(out, tiny_digits, cpu)  # in place: info only, same fingerprint
    assert recalibrated.threshold == pytest.approx(threshold)
    assert load_checkpoint(out).fingerprint == loaded.fingerprint
    # by hand: RB8 at width 1/16 puts out 64 channels at 8 x 8; C' = 2 at stride 2 sends 2 x 4 x 4 bits a step, one
    # step: 32 bits, 4 bytes, and 64 * 8 * 8 / (2 * 4 * 4) = 128 times fewer bits than the block's own spikes
    assert recorded.transmitted_bytes == 4
    assert recorded.compression == 128
    assert recorded.command and recorded.pretrained_fingerprint == load_checkpoint(tiny_backbone).fingerprint
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_finetune_refuses_a_backbone_from_another_dataset(
    tiny_backbone: Path, tiny_digits: Dataset, cpu: Runtime, tmp_path: Path
) -> None:
    other = dataclasses.replace(tiny_digits, name="cifar100")
    with pytest.raises(ValueError, match="pre-trained on 'digits'"):
        finetune(
            other,
            tiny_backbone,
            SpikingResNetConfig().bottleneck_preset(SPLIT_POINT),
            TINY_TRAIN,
            cpu,
            tmp_path / "x.safetensors",
        )


def test_split_stats_at_rb16_are_the_papers_256x() -> None:
    for width in (1.0, 0.125, 0.0625):
        backbone = SpikingResNetConfig(width_multiplier=width)
        stats = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(16)).geometry()
        assert stats.compression == 256
    assert ModelConfig().with_split(SpikingResNetConfig().bottleneck_preset(16)).geometry().transmitted_bytes == 64


def test_damping_scales_the_residual_branch_of_every_block_that_has_a_shortcut() -> None:
    resnet = SpikingBackbone(SpikingResNetConfig(width_multiplier=0.0625, num_classes=10), time_steps=1)
    damp_residual_branches(resnet, 0.3)
    assert len(resnet.blocks) == 16
    for block in resnet.blocks.values():  # every ResNet block: 1x1 -> 3x3 -> 1x1 (conv3) + shortcut
        assert torch.all(block.conv3.bn.weight == 0.3)
    mobilenet = SpikingBackbone(SpikingMobileNetV2Config(width_multiplier=0.25, num_classes=10), time_steps=1)
    damp_residual_branches(mobilenet, 0.3)
    # stride 1 and as many channels out as in: the repeats after the first block of each stage, and at
    # width 1/4 also IRB1 and IRB2, whose 16 and 24 channels round up to the stem's 8 (multiples of 8)
    with_shortcut = {
        "irb1",
        "irb2",
        "irb3",
        "irb5",
        "irb6",
        "irb8",
        "irb9",
        "irb10",
        "irb12",
        "irb13",
        "irb15",
        "irb16",
    }
    for key, block in mobilenet.blocks.items():
        damped = torch.all(block.project.bn.weight == 0.3).item()
        assert damped == (key in with_shortcut), key
        assert (block.residual_bn is None) == (key not in with_shortcut), key


def test_finetune_refuses_an_arch_other_than_the_backbone_checkpoints(
    tiny_backbone: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spikebottlenet.sbn.cli import main

    out = tmp_path / "split.safetensors"
    code = main(
        [
            "train",
            "finetune",
            "--pretrained",
            str(tiny_backbone),
            "--arch",
            "mobilenetv2",
            "--split-point",
            "3",
            "--epochs",
            "1",
            "--out",
            str(out),
        ]
    )
    error = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "spiking_resnet50 backbone, not spiking_mobilenetv2" in error
