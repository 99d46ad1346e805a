"""The demo checkpoints in shared/models: intact, small, and as accurate as their metadata says."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import pytest
import torch

from shared.backbones import BACKBONES
from shared.checkpoint import DEFAULT_MODEL_DIR, embedded_models, load_checkpoint, read_checkpoint_info
from training.datasets import Dataset, load_digits
from training.demo import DEMOS, demo_path
from training.runtime import Runtime
from training.trainer import evaluate

SHIPPED = sorted(DEFAULT_MODEL_DIR.glob("digits_*.safetensors"))


@functools.cache
def digits_in_style(input_style: str) -> Dataset:
    return load_digits(input_style)
MAX_TOTAL_BYTES = 5_000_000

# A Spike ResNet50 demo checkpoint shipped before backbones became plug-ins (and before input styles),
# byte for byte, and the fingerprint devices and edges reported for it. Later versions must load it
# unchanged: same config, same weights, same fingerprint (the shipped models have since been retrained).
PRE_PLUGIN_RB8 = Path(__file__).parents[1] / "data" / "pre_plugin_digits_rb8.safetensors"
PRE_PLUGIN_RB8_SHA256 = "78d973b1a9dd25417cf459233749baec8d0da65df524941af97ce0858922a2c0"
PRE_PLUGIN_RB8_FINGERPRINT = "a25dfbef1e6f8d87e263742d36da1a99b58513cab5ef84e11e0f56659c9e8076"


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


def test_a_pre_plugin_resnet_checkpoint_loads_unchanged() -> None:
    assert hashlib.sha256(PRE_PLUGIN_RB8.read_bytes()).hexdigest() == PRE_PLUGIN_RB8_SHA256  # the very file
    loaded = load_checkpoint(PRE_PLUGIN_RB8)  # verifies the digests and the fingerprint
    assert loaded.fingerprint == PRE_PLUGIN_RB8_FINGERPRINT
    assert loaded.config.backbone.arch == "spiking_resnet50" and loaded.config.input_style == "natural"
    # it predates info_digest: its info ("trained": true, accuracies) loads, but as unverified claims
    assert loaded.checkpoint.info["trained"] is True and not loaded.checkpoint.info_verified
    assert not loaded.checkpoint.trained
    for part in ("head", "tail"):
        assert load_checkpoint(PRE_PLUGIN_RB8, part).fingerprint == PRE_PLUGIN_RB8_FINGERPRINT


def test_the_last_split_points_send_about_256_times_less_than_their_spikes() -> None:
    rb16 = read_checkpoint_info(DEFAULT_MODEL_DIR / "digits_rb16.safetensors").config.geometry()
    assert rb16.compression == 256
    irb17 = read_checkpoint_info(DEFAULT_MODEL_DIR / "digits_irb17.safetensors").config.geometry()
    # width 1/4: 80 x 4 x 4 spikes into one 2 x 2 channel; C' cannot go below 1, so 320x rather than 256x
    assert irb17.spike_shape[1:] == (1, 2, 2) and irb17.compression == 80 * 4 * 4 / (1 * 2 * 2)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_reaches_its_recorded_accuracy(path: Path, cpu: Runtime) -> None:
    loaded = load_checkpoint(path)  # refuses weights that do not match their recorded digests
    digits = digits_in_style(loaded.config.input_style)  # the test split as the device prepares it
    assert loaded.fingerprint == read_checkpoint_info(path).fingerprint
    info = loaded.checkpoint.info
    assert loaded.checkpoint.info_verified and loaded.checkpoint.trained and info["dataset"] == "digits"
    assert info["accuracy_drop"] == pytest.approx(info["pretrained_accuracy"] - info["test_accuracy"], abs=0.01)
    accuracy, _ = evaluate(loaded.model, digits, digits.test, cpu)
    assert accuracy == pytest.approx(info["test_accuracy"], abs=1.0)
    # "uncertain" flags at most 5 % of these test images (shared/uncertainty.py), recounted here
    with torch.no_grad():
        msp = loaded.model.eval()(digits.normalize(digits.test.images)).softmax(-1).max(-1).values
    assert (msp < info["uncertainty"]["threshold"]).float().mean() <= 0.05
    assert accuracy > 60  # far above chance (10%); the README gives each model's accuracy and drop
