"""The demo checkpoints in shared/models: intact, small, and as accurate as their metadata says."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.backbones import BACKBONES
from shared.checkpoint import DEFAULT_MODEL_DIR, embedded_models, load_checkpoint, read_checkpoint_info
from training.datasets import Dataset
from training.demo import DEMOS, demo_path
from training.runtime import Runtime
from training.trainer import evaluate

SHIPPED = sorted(DEFAULT_MODEL_DIR.glob("digits_*.safetensors"))
MAX_TOTAL_BYTES = 5_000_000

# The Spike ResNet50 demo checkpoints shipped before backbones became plug-ins, byte for byte, and
# the fingerprints devices and edges reported for them (the README's docker response shows RB8's).
# The plug-in change must load them unchanged: same config, same weights, same fingerprint.
PRE_PLUGIN_RESNET = {
    "digits_rb3.safetensors": ("06cf59e173732833a67b3a8f2ca25f8cbd05ecb09a0030c6a90d4e9d189b30bf",
                               "56e1b3384e97e6bc7d09cdd5e44e94945161493e1647fae962fbf6e267d0f502"),
    "digits_rb8.safetensors": ("78d973b1a9dd25417cf459233749baec8d0da65df524941af97ce0858922a2c0",
                               "a25dfbef1e6f8d87e263742d36da1a99b58513cab5ef84e11e0f56659c9e8076"),
    "digits_rb16.safetensors": ("f8f4e629a2add1fe164e14fb9b54b20e280be6c2cccb54d121fbb32b4e908b64",
                                "2155dbe749aedf343a9b048ea2c376f92833470e9b4a310ba91a4f311cec515b"),
}


def test_every_backbone_ships_its_demo_set_and_the_package_stays_small() -> None:
    assert set(DEMOS) == set(BACKBONES)
    expected = {demo_path(DEFAULT_MODEL_DIR, BACKBONES[arch]().split_point(k).name).name
                for arch, plan in DEMOS.items() for k in plan.split_points}
    assert {p.name for p in SHIPPED} == expected
    for arch, plan in DEMOS.items():
        last = len(BACKBONES[arch]().split_points())
        assert 8 in plan.split_points, "split point 8 is the services' default"
        assert min(plan.split_points) <= 3 and max(plan.split_points) == last  # early, middle, last
    assert sum(p.stat().st_size for p in SHIPPED) < MAX_TOTAL_BYTES
    assert [(c.config.backbone.arch, c.config.split_point.index) for c in embedded_models()] == sorted(
        (arch, k) for arch, plan in DEMOS.items() for k in plan.split_points)


@pytest.mark.parametrize("name", sorted(PRE_PLUGIN_RESNET))
def test_pre_plugin_resnet_checkpoints_load_unchanged(name: str) -> None:
    path = DEFAULT_MODEL_DIR / name
    file_sha256, fingerprint = PRE_PLUGIN_RESNET[name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256  # the very file, not retrained
    loaded = load_checkpoint(path)  # verifies the digests and the fingerprint
    assert loaded.fingerprint == fingerprint
    assert loaded.config.backbone.arch == "spiking_resnet50"
    for part in ("head", "tail"):
        assert load_checkpoint(path, part).fingerprint == fingerprint


def test_the_last_split_points_send_about_256_times_less_than_their_spikes() -> None:
    rb16 = read_checkpoint_info(DEFAULT_MODEL_DIR / "digits_rb16.safetensors").config.geometry()
    assert rb16.compression == 256
    irb17 = read_checkpoint_info(DEFAULT_MODEL_DIR / "digits_irb17.safetensors").config.geometry()
    # width 1/4: 80 x 4 x 4 spikes into one 2 x 2 channel; C' cannot go below 1, so 320x rather than 256x
    assert irb17.spike_shape[1:] == (1, 2, 2) and irb17.compression == 80 * 4 * 4 / (1 * 2 * 2)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_reaches_its_recorded_accuracy(path: Path, digits: Dataset, cpu: Runtime) -> None:
    loaded = load_checkpoint(path)  # refuses weights that do not match their recorded digests
    assert loaded.fingerprint == read_checkpoint_info(path).fingerprint
    info = loaded.checkpoint.info
    assert info["trained"] is True and info["dataset"] == "digits"
    assert info["accuracy_drop"] == pytest.approx(info["pretrained_accuracy"] - info["test_accuracy"], abs=0.01)
    accuracy, _ = evaluate(loaded.model, digits, digits.test, cpu)
    assert accuracy == pytest.approx(info["test_accuracy"], abs=1.0)
    assert accuracy > 60  # far above chance (10%); the README gives each model's accuracy and drop
