"""The demo checkpoints in shared/models: intact, small, and as accurate as their metadata says."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint, read_checkpoint_info
from training.datasets import Dataset
from training.demo import DEMO
from training.recipes import SplitStats
from training.runtime import Runtime
from training.trainer import evaluate

SHIPPED = sorted(DEFAULT_MODEL_DIR.glob("digits_rb*.safetensors"), key=lambda p: int(p.stem.removeprefix("digits_rb")))
MAX_TOTAL_BYTES = 5_000_000


def test_the_demo_set_is_complete_and_small() -> None:
    assert [f"digits_rb{k}.safetensors" for k in DEMO.split_points] == [p.name for p in SHIPPED]
    assert 8 in DEMO.split_points, "RB8 is the services' default split point"
    assert min(DEMO.split_points) <= 3 and max(DEMO.split_points) == 16
    assert sum(p.stat().st_size for p in SHIPPED) < MAX_TOTAL_BYTES


def test_rb16_sends_256_times_less_than_its_spikes() -> None:
    assert SplitStats.of(read_checkpoint_info(DEFAULT_MODEL_DIR / "digits_rb16.safetensors").config).compression == 256


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_reaches_its_recorded_accuracy(path: Path, digits: Dataset, cpu: Runtime) -> None:
    loaded = load_checkpoint(path)  # refuses weights that do not match their recorded digests
    assert loaded.fingerprint == read_checkpoint_info(path).fingerprint
    info = loaded.checkpoint.info
    assert info["trained"] is True and info["dataset"] == "digits"
    assert info["accuracy_drop"] == pytest.approx(info["pretrained_accuracy"] - info["test_accuracy"], abs=0.01)
    accuracy, _ = evaluate(loaded.model, digits, digits.test, cpu)
    assert accuracy == pytest.approx(info["test_accuracy"], abs=1.0)
    assert accuracy > 90
