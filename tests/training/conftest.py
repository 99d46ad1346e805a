"""Fixtures for the training tests: the digits once per session, and a tiny pre-trained backbone.

Every model here is the narrowest spiking ResNet (width 1/16, all 16 blocks) at T=1 on a few dozen
images, so a whole pretrain / finetune / sweep runs in seconds on a laptop CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spikebottlenet.training.datasets import Dataset, load_digits
from spikebottlenet.training.recipes import pretrain
from spikebottlenet.training.runtime import Runtime, start
from spikebottlenet.training.trainer import TrainConfig

WIDTH = 0.0625
TINY_TRAIN = TrainConfig(epochs=1, batch_size=16, lr=3e-3, warmup_epochs=0.0, seed=0)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="session")
def tiny_digits(digits: Dataset) -> Dataset:
    return digits.take(32, 16)


@pytest.fixture(scope="session")
def cpu() -> Runtime:
    return start("fp32", "cpu")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory, tiny_digits: Dataset, cpu: Runtime) -> Path:
    """A backbone checkpoint pre-trained for one epoch on 32 digits (read-only: copy before changing)."""
    path = tmp_path_factory.mktemp("backbone") / "backbone.safetensors"
    pretrain(tiny_digits, "spiking_resnet50", WIDTH, 1, TINY_TRAIN, cpu, path)
    return path
