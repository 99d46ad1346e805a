"""Shared test helpers: narrow seeded models whose spikes are non-trivial.

An untrained model in eval mode emits no spikes: at initialization BN's running statistics are
mean 0 / variance 1, while a layer's real pre-activations are far from that, so after tdBN nearly
every membrane stays below threshold. ``calibrate_bn`` sets every BN's running statistics to the
statistics of one batch, after which an eval-mode forward fires about as often as a train-mode one.

    path = make_calibrated_checkpoint(tmp_path, split_point=8)       # plain function
    path = calibrated_checkpoint(8)                                   # session-cached fixture (ResNet50)
    path = calibrated_checkpoint(8, arch="spiking_mobilenetv2")       # any registered backbone

Tests import the functions as ``from tests.conftest import ...``; the fixture needs no import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from spikebottlenet.shared.backbones import DEFAULT_ARCH, backbone_config
from spikebottlenet.shared.checkpoint import save_checkpoint
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.split_model import SpikeBottleNet

CALIBRATION_IMAGES = 4
# the narrow widths the tests use: about 100k parameters each, so a forward takes milliseconds
TEST_WIDTH = {"spiking_resnet50": 0.0625, "spiking_mobilenetv2": 0.25}

# The test models are narrow, so each op is tiny and intra-op threads only add synchronization;
# on a busy 2-core machine two spinning OpenMP threads made a forward 10-50x slower than one.
torch.set_num_threads(1)


def exported_demo_head(format: str, arch: str, split_point: int, folder: Path) -> tuple[Path, Path]:
    """The embedded demo model for ``arch`` at ``split_point``, and its head as ``sbn export FORMAT`` writes it into
    ``folder``."""
    from spikebottlenet.sbn.cli import main

    out = folder / f"head.{format}"
    assert main(["export", format, "--arch", arch, "--split-point", str(split_point), "--out", str(out)]) == 0
    return default_checkpoint(arch, split_point), out


def normalized_images(config: ModelConfig, images: torch.Tensor) -> torch.Tensor:
    """uint8 images [B, 3, H, W] normalized as shared/preprocess.py's load_image does: (x / 255 - mean) / std."""
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def calibrate_bn(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BN's running statistics to those of ``images`` and leave ``model`` in eval mode.

    momentum=None makes BN keep a cumulative average, which after one batch is exactly that
    batch's statistics (each layer's seen on the train-mode output of the layers before it).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    model.eval()


def calibrated_model(
    split_point: int,
    width_multiplier: float | None = None,
    num_classes: int = 10,
    seed: int = 0,
    arch: str = DEFAULT_ARCH,
) -> SpikeBottleNet:
    """A seeded narrow SpikeBottleNet with the paper's bottleneck at ``split_point`` of ``arch``, calibrated."""
    width = TEST_WIDTH[arch] if width_multiplier is None else width_multiplier
    backbone = backbone_config(arch, width_multiplier=width, num_classes=num_classes)
    config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(split_point))
    torch.manual_seed(seed)
    model = SpikeBottleNet(config)
    generator = torch.Generator().manual_seed(seed)
    size = backbone.image_size
    images = torch.randn(CALIBRATION_IMAGES, 3, size, size, generator=generator)
    calibrate_bn(model, images)
    with torch.no_grad():
        spikes = model.head(images)  # [T, B, C', H', W']: the encoder's tdBN centres these very currents
    if not spikes.any():
        raise RuntimeError(
            f"calibrated {config.split_point.name} head emits no spikes; tests built on it would be vacuous"
        )
    return model


def make_calibrated_checkpoint(
    tmp_path: Path,
    split_point: int,
    width_multiplier: float | None = None,
    num_classes: int = 10,
    seed: int = 0,
    arch: str = DEFAULT_ARCH,
) -> Path:
    """Save ``calibrated_model(...)`` as an (untrained) checkpoint in ``tmp_path``; returns its path."""
    model = calibrated_model(split_point, width_multiplier, num_classes, seed, arch)
    name = f"calibrated_{arch}_{model.config.split_point.key}_w{width_multiplier}_c{num_classes}_s{seed}"
    path = Path(tmp_path) / f"{name}.safetensors"
    save_checkpoint(model, model.config, path)  # an untrained placeholder's info
    return path


@pytest.fixture(scope="session")
def calibrated_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory fixture: ``calibrated_checkpoint(split_point, width_multiplier=..., num_classes=..., seed=...,
    arch=...)``.

    Each distinct checkpoint is built once per session and shared, so treat the file as
    read-only: copy it before modifying it.
    """
    folder = tmp_path_factory.mktemp("calibrated")
    cache: dict[tuple, Path] = {}

    def make(
        split_point: int,
        width_multiplier: float | None = None,
        num_classes: int = 10,
        seed: int = 0,
        arch: str = DEFAULT_ARCH,
    ) -> Path:
        key = (split_point, width_multiplier, num_classes, seed, arch)
        if key not in cache:
            cache[key] = make_calibrated_checkpoint(folder, *key)
        return cache[key]

    return make
