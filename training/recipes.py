"""The paper's two training steps, each ending in a checkpoint (shared/checkpoint.py):

    pretrain   the spiking backbone alone (no bottleneck)                 -> backbone checkpoint
    finetune   insert the bottleneck at split point k, load the pre-trained weights,
               train the whole split model jointly                         -> split checkpoint

Both take the path of a resumable training state (``state_path(out)`` next to the checkpoint by
default) and continue from it when it exists. Only rank 0 writes files.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikebottlenet.shared.backbones import backbone_config
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.shared.bottleneck import SplitPreset
from spikebottlenet.shared.checkpoint import LoadedModel, load_checkpoint, save_checkpoint, update_info
from spikebottlenet.shared.checkpoint_metadata import CheckpointError, TrainingRecord, WireTraining
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.split_model import SpikeBottleNet
from spikebottlenet.shared.uncertainty import Calibration, calibrate, ink, max_softmax, stroke_depth

from .datasets import Dataset
from .entropy_fit import fit_codec
from .runtime import Runtime
from .trainer import TrainConfig, evaluate, fit


def command_line() -> str:
    """How this process was started, for the checkpoint's record: "sbn train ..." however sbn was run."""
    program = Path(sys.argv[0])
    is_sbn = program.name == "sbn" or program.parent.name == "sbn"  # console script, or `-m sbn` (torchrun too)
    return shlex.join(["sbn", *sys.argv[1:]] if is_sbn else sys.argv)


def state_path(out: Path) -> Path:
    """Where the resumable training state of the run writing ``out`` lives."""
    return out.with_name(out.name.removesuffix(".safetensors") + ".train-state.safetensors")


def _resume_from(state: Path | None, restart: bool, runtime: Runtime) -> Path | None:
    if state is not None and restart and runtime.is_main:
        state.unlink(missing_ok=True)
    runtime.barrier()  # the other ranks must not read a state file rank 0 is about to delete
    return state


def pretrain_config(data: Dataset, arch: str, width: float, time_steps: int) -> ModelConfig:
    backbone = backbone_config(arch, width_multiplier=width, num_classes=len(data.labels))
    return ModelConfig(
        backbone=backbone,
        bottleneck=None,
        time_steps=time_steps,
        mean=data.mean,
        std=data.std,
        labels=data.labels,
        input_style=data.input_style,
    )


RESIDUAL_INIT = 0.3


def damp_residual_branches(model: SpikingBackbone, scale: float = RESIDUAL_INIT) -> None:
    """Set the residual branch's last tdBN scale of every block that has one to ``scale`` before training.

    The model already starts each block near its shortcut (``RESIDUAL_BN_INIT``, see
    shared/layers.py for why a deep spiking net needs it); training the Spike ResNet50 from scratch on
    the digits went best a little higher: in a 12-epoch A/B this scale gave 56% instead of 49% test
    accuracy, with far steadier per-epoch test accuracy. The demo checkpoints were trained with it.
    """
    for block in model.blocks.values():
        # None for a block without a shortcut (isinstance, not `is not None`: nn.ModuleDict leaves blocks untyped)
        if isinstance(block.residual_bn, nn.BatchNorm2d):
            nn.init.constant_(block.residual_bn.weight, scale)


def pretrain(
    data: Dataset,
    arch: str,
    width: float,
    time_steps: int,
    train: TrainConfig,
    runtime: Runtime,
    out: Path,
    state: Path | None = None,
    restart: bool = False,
) -> TrainingRecord:
    """Train backbone ``arch`` from scratch; writes ``out`` and returns its record."""
    config = pretrain_config(data, arch, width, time_steps)
    torch.manual_seed(train.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = SpikingBackbone(config.backbone, config.time_steps)
    damp_residual_branches(model)
    history = fit(
        model,
        data,
        train,
        runtime,
        state_path=_resume_from(state, restart, runtime),
        run={"model": config.to_dict()},
        description="pretrain",
    )
    validation_accuracy, test_accuracy = accuracies(model, data, history, runtime)
    record = TrainingRecord(
        trained=True,
        stage="pretrain",
        dataset=data.name,
        command=command_line(),
        epochs=train.epochs,
        seed=train.seed,
        train_accuracy=history[-1]["train_accuracy"],
        validation_accuracy=validation_accuracy,
        test_accuracy=test_accuracy,
    )
    if runtime.is_main:
        save_checkpoint(model, config, out, record)
    return record


def split_model(base: LoadedModel, preset: SplitPreset) -> SpikeBottleNet:
    """Step 2's starting point: every backbone tensor in place, plus ``preset``'s new encoder / decoder."""
    model = SpikeBottleNet(base.config.with_split(preset))
    model.load_backbone(base.model)
    return model


def finetune(
    data: Dataset,
    pretrained: Path,
    preset: SplitPreset,
    train: TrainConfig,
    runtime: Runtime,
    out: Path,
    state: Path | None = None,
    restart: bool = False,
) -> tuple[SpikeBottleNet, TrainingRecord]:
    """Insert ``preset``'s bottleneck into the pre-trained backbone and train the whole split model.

    Writes ``out`` and returns the trained model and its record. The accuracy drop is against the
    backbone's own recorded test accuracy (same dataset, test split).
    """
    base = load_checkpoint(pretrained)
    if base.config.bottleneck is not None:
        raise CheckpointError(f"{pretrained} is already a split model; fine-tuning starts from a backbone checkpoint")
    base_record = base.checkpoint.info
    base_dataset = base_record.dataset
    if base_dataset != data.name:
        raise CheckpointError(f"{pretrained} was pre-trained on {base_dataset!r}, not {data.name!r}")
    if base_record.test_accuracy is None:
        raise CheckpointError(
            f"{pretrained} records no test accuracy to measure the split model's drop against "
            f"(a backbone from sbn train pretrain has one)"
        )
    torch.manual_seed(train.seed)  # the new encoder / decoder start identically on every rank
    model = split_model(base, preset)
    config = model.config
    name = f"finetune {config.split_point.name}"
    history = fit(
        model,
        data,
        train,
        runtime,
        state_path=_resume_from(state, restart, runtime),
        run={"model": config.to_dict(), "pretrained": base.fingerprint},
        description=name,
    )
    validation_accuracy, test_accuracy = accuracies(model, data, history, runtime)
    pretrained_accuracy = float(base_record.test_accuracy)
    geometry = config.geometry()
    record = TrainingRecord(
        trained=True,
        stage="finetune",
        dataset=data.name,
        command=command_line(),
        epochs=train.epochs,
        seed=train.seed,
        validation_accuracy=validation_accuracy,
        test_accuracy=test_accuracy,
        pretrained_fingerprint=base.fingerprint,
        pretrained_time_steps=base.config.time_steps,
        pretrained_accuracy=pretrained_accuracy,
        accuracy_drop=round(pretrained_accuracy - test_accuracy, 2),
        validation_drop=validation_drop(base_record, validation_accuracy),
        transmitted_bytes=geometry.transmitted_bytes,
        compression=round(geometry.compression, 2),
        uncertainty=calibration_of(model, data, runtime),
    )
    if runtime.is_main:
        save_checkpoint(model, config, out, record)
    return model, record


def refine(
    path: Path, data: Dataset, train: TrainConfig, wire: WireTraining, runtime: Runtime, out: Path
) -> TrainingRecord:
    """Train the split checkpoint ``path`` further, all of it, with ``wire``'s terms (training/wire_training.py).

    Writes ``out`` calibrated anew, its entropy-codec model refitted (the spikes changed), and returns its record.
    """
    loaded = load_checkpoint(path)
    if loaded.config.bottleneck is None:
        raise CheckpointError(f"{path} is a backbone checkpoint: refine trains a split model's wire")
    before = loaded.checkpoint.info
    if not loaded.checkpoint.info_verified or before.pretrained_accuracy is None:
        raise CheckpointError(
            f"{path}: refine needs verified info with the backbone's accuracy (a fine-tuned checkpoint)"
        )
    model, config = loaded.model, replace(loaded.config, entropy_model=None)
    history = fit(model, data, train, runtime, wire=wire, description=f"refine {config.split_point.name}")
    validation_accuracy, test_accuracy = accuracies(model, data, history, runtime)
    record = replace(
        before,
        stage="refine",
        command=command_line(),
        validation_accuracy=validation_accuracy,
        test_accuracy=test_accuracy,
        accuracy_drop=round(float(before.pretrained_accuracy) - test_accuracy, 2),
        uncertainty=calibration_of(model, data, runtime),
        entropy_codec=None,  # of the spikes before: fit_codec measures the new ones
        refined_from=loaded.fingerprint,
        wire_training=wire,
        refine_epochs=train.epochs,
    )
    if runtime.is_main:
        save_checkpoint(model, config, out, record)
        record = replace(record, entropy_codec=fit_codec(out, data, runtime, out))
    return record


def accuracies(
    model: nn.Module, data: Dataset, history: list[dict[str, float]], runtime: Runtime
) -> tuple[float, float]:
    """The trained model's validation accuracy (its last epoch's) and its test accuracy, measured once, now."""
    test_accuracy, _ = evaluate(model, data, data.test.to(runtime.device), runtime)
    return history[-1]["validation_accuracy"], round(test_accuracy, 2)


def validation_drop(backbone: TrainingRecord, validation_accuracy: float) -> float | None:
    """The drop on the validation split, what a sweep chooses on; None for a backbone trained before validation
    splits were recorded."""
    if backbone.validation_accuracy is None:
        return None
    return round(float(backbone.validation_accuracy) - validation_accuracy, 2)


@torch.no_grad()
def validation_scores(model: nn.Module, data: Dataset, runtime: Runtime, batch_size: int = 256) -> np.ndarray:
    """[N] maximum softmax probability of ``model`` on each validation image (shared/uncertainty.py)."""
    model.eval().to(runtime.device)
    scores = []
    for images in data.validation.images.split(batch_size):
        with runtime.autocast():
            logits = model(data.normalize(images.to(runtime.device)))
        scores.append(max_softmax(logits.float().cpu().numpy()))
    return np.concatenate(scores)


INK_PASSES = 4  # seeded re-drawings of the training split whose ink the calibration's max_ink covers


def train_ink(data: Dataset) -> np.ndarray | None:
    """[M] ink of the training images as a digits model saw them (scans and seeded re-drawings);
    None for a natural-style dataset, where "more ink than in training" means nothing."""
    if data.input_style not in ("digits", "mnist"):
        return None
    generator = torch.Generator().manual_seed(0)
    passes = [data.train.images] + [
        data.augment(data.train.images, data.train.labels, generator) for _ in range(INK_PASSES)
    ]
    return np.concatenate([ink((images.float() / 255).numpy()) for images in passes])


def train_stroke_depth(data: Dataset) -> np.ndarray | None:
    """[M] stroke depth of an MNIST model's training digits, as written: not the re-drawings, whose boldest
    zeros are filled disks (shared/uncertainty.py); None for the other input styles."""
    if data.input_style != "mnist":
        return None
    return stroke_depth((data.train.images[:, :1].float() / 255).numpy())  # it reads channel 0 only


def calibration_of(model: nn.Module, data: Dataset, runtime: Runtime) -> Calibration:
    """The uncertainty rules' calibration for ``model`` on ``data`` (shared/uncertainty.py)."""
    scores = validation_scores(model, data, runtime)
    return calibrate(scores, train_ink=train_ink(data), train_stroke_depth=train_stroke_depth(data))


def calibrate_checkpoint(path: Path, data: Dataset, runtime: Runtime) -> Calibration:
    """(Re)compute the uncertainty threshold of a split checkpoint on ``data``'s validation split, in place.

    Only the info changes: the config and the weights, hence the fingerprint, stay as they were.
    """
    loaded = load_checkpoint(path)
    if loaded.config.input_style != data.input_style:
        raise CheckpointError(f"{path} takes {loaded.config.input_style!r} input, the data is {data.input_style!r}")
    calibration = calibration_of(loaded.model, data, runtime)
    update_info(path, replace(loaded.checkpoint.info, uncertainty=calibration))
    return calibration
