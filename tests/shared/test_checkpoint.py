"""Checkpoints: exact round trips, per-part verification, and refusal of anything not intact."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spikebottlenet.shared.backbones import SpikingResNetConfig
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.shared.checkpoint import load_checkpoint, save_checkpoint, update_info
from spikebottlenet.shared.checkpoint_metadata import (
    BACKBONE_DIR,
    DEFAULT_MODEL_DIR,
    CheckpointError,
    TrainingRecord,
    read_checkpoint_info,
)
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.split_model import SpikeBottleNet, SplitHead, SplitTail
from spikebottlenet.shared.uncertainty import Calibration
from tests.conftest import calibrated_model

SPLIT_POINT = 6


@pytest.fixture
def checkpoint(tmp_path: Path, calibrated_checkpoint: Callable[..., Path]) -> Path:
    """A private copy of a calibrated RB6 checkpoint, free to be damaged."""
    return Path(shutil.copy(calibrated_checkpoint(SPLIT_POINT), tmp_path / "model.safetensors"))


def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_round_trip_gives_equal_logits(tmp_path: Path) -> None:
    model = calibrated_model(SPLIT_POINT)
    fingerprint = save_checkpoint(model, model.config, tmp_path / "m.safetensors", TrainingRecord(trained=False))
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.fingerprint == fingerprint and loaded.config == model.config
    assert not loaded.model.training and not loaded.checkpoint.trained
    with torch.no_grad():
        assert torch.equal(loaded.model(images()), model(images()))


def test_backbone_checkpoint_round_trips(tmp_path: Path) -> None:
    config = ModelConfig(backbone=SpikingResNetConfig(width_multiplier=0.0625, num_classes=10), time_steps=2)
    model = SpikingBackbone(config.backbone, config.time_steps).eval()
    record = TrainingRecord(trained=True, stage="pretrain", dataset="digits", epochs=3, test_accuracy=50.5)
    save_checkpoint(model, config, tmp_path / "b.safetensors", record)
    loaded = load_checkpoint(tmp_path / "b.safetensors")
    assert isinstance(loaded.model, SpikingBackbone) and loaded.checkpoint.digests.keys() == {"backbone"}
    assert loaded.checkpoint.info == record and loaded.checkpoint.trained
    with torch.no_grad():
        assert torch.equal(loaded.model(images()), model(images()))


def test_head_and_tail_load_alone_with_the_same_fingerprint(checkpoint: Path) -> None:
    full, head, tail = (load_checkpoint(checkpoint, part) for part in ("full", "head", "tail"))
    assert isinstance(head.model, SplitHead) and isinstance(tail.model, SplitTail)
    assert head.fingerprint == tail.fingerprint == full.fingerprint == read_checkpoint_info(checkpoint).fingerprint
    with torch.no_grad():
        assert torch.equal(tail.model(head.model(images())), full.model(images()))


def tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Absolute byte range of one tensor's data in a safetensors file (u64 header length, JSON header, data)."""
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    begin, end = json.loads(data[8 : 8 + header_len])[name]["data_offsets"]
    return 8 + header_len + begin, 8 + header_len + end


def test_a_modified_head_tensor_is_refused_for_head_and_full_but_not_tail(checkpoint: Path) -> None:
    begin, _ = tensor_span(checkpoint, "head.stem.conv.weight")
    data = bytearray(checkpoint.read_bytes())
    data[begin] ^= 0x01  # one bit of one float
    checkpoint.write_bytes(bytes(data))
    for part in ("full", "head"):
        with pytest.raises(CheckpointError, match="head weights do not match their recorded digest"):
            load_checkpoint(checkpoint, part)
    load_checkpoint(checkpoint, "tail")  # the edge verifies, and trusts, only what it loads


def test_other_weights_under_the_old_metadata_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
        state = {name: f.get_tensor(name) for name in f.keys()}
    state["tail.classifier.fc.bias"] = state["tail.classifier.fc.bias"] + 1e-3
    forged = tmp_path / "forged.safetensors"
    save_file(state, str(forged), metadata=metadata)
    with pytest.raises(CheckpointError, match="tail weights do not match their recorded digest"):
        load_checkpoint(forged)


def test_edited_config_metadata_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
        state = {name: f.get_tensor(name) for name in f.keys()}
    config = json.loads(metadata["config"])
    config["time_steps"] = 8
    forged = tmp_path / "forged.safetensors"
    save_file(state, str(forged), metadata={**metadata, "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match="fingerprint does not match"):
        read_checkpoint_info(forged)


def test_the_fingerprint_is_of_the_stored_config_object_not_its_formatting(checkpoint: Path, tmp_path: Path) -> None:
    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
        state = {name: f.get_tensor(name) for name in f.keys()}
    config = json.loads(metadata["config"])
    reordered = json.dumps(dict(reversed(config.items())), indent=4)  # same object, other text
    assert reordered != metadata["config"]
    same = tmp_path / "same.safetensors"
    save_file(state, str(same), metadata={**metadata, "config": reordered})
    assert read_checkpoint_info(same).fingerprint == read_checkpoint_info(checkpoint).fingerprint


class TouchOnUnpickle:
    """Pickles as a call to Path.touch(marker): unpickling it leaves a trace."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_pickle_is_refused_without_being_unpickled(tmp_path: Path) -> None:
    path, marker = tmp_path / "model.pt", tmp_path / "unpickled"
    torch.save({"state": calibrated_model(1).state_dict(), "payload": TouchOnUnpickle(marker)}, path)
    with pytest.raises(CheckpointError, match="is not a safetensors file"):
        load_checkpoint(path)
    assert not marker.exists()


TRUNCATIONS = {
    "empty": lambda n: 0,
    "inside the length": lambda n: 5,
    "inside the header": lambda n: 100,
    "half": lambda n: n // 2,
    "last byte missing": lambda n: n - 1,
}


@pytest.mark.parametrize("where", TRUNCATIONS)
def test_a_truncated_file_is_refused(checkpoint: Path, where: str) -> None:
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: TRUNCATIONS[where](len(data))])
    with pytest.raises(CheckpointError, match=r"is not a safetensors file \(or it is truncated\)"):
        load_checkpoint(checkpoint)


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="is not a safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_a_foreign_safetensors_file_is_refused(tmp_path: Path, metadata: dict | None) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="not a SpikeBottleNet checkpoint"):
        load_checkpoint(path)


def test_missing_paths_and_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_saved_checkpoints_are_readable_by_other_users(tmp_path):
    # services (and the containers' unprivileged user) read checkpoints that another user wrote
    backbone = SpikingResNetConfig(width_multiplier=0.0625, num_classes=10)
    config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(8))
    path = tmp_path / "model.safetensors"
    save_checkpoint(SpikeBottleNet(config), config, path)
    assert path.stat().st_mode & 0o777 == 0o644


def test_update_info_rewrites_only_the_info(checkpoint: Path) -> None:
    before = read_checkpoint_info(checkpoint)
    with safe_open(str(checkpoint), framework="pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
        metadata = f.metadata()
    update_info(checkpoint, dataclasses.replace(before.info, uncertainty=Calibration(0.5, 0.02, 100)))
    after = read_checkpoint_info(checkpoint)
    assert after.info.uncertainty == Calibration(0.5, 0.02, 100) and after.fingerprint == before.fingerprint
    assert after.info_verified
    with safe_open(str(checkpoint), framework="pt") as f:
        assert json.loads(f.metadata()["info"])["uncertainty"] == {
            "threshold": 0.5,
            "flagged_fraction": 0.02,
            "calibration_images": 100,
            "score": "max_softmax",
            "max_ink": None,
        }
        assert f.metadata()["config"] == metadata["config"]  # the stored JSON, byte for byte
        assert all(torch.equal(f.get_tensor(name), tensor) for name, tensor in tensors.items())
    assert load_checkpoint(checkpoint).fingerprint == before.fingerprint


def edit_metadata_by_hand(path: Path, edit: Callable[[dict[str, str]], None]) -> None:
    """Rewrite the metadata in the file's JSON header directly, as a person with an editor would:
    no safetensors writer, the tensor bytes untouched."""
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    edit(header["__metadata__"])
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes with spaces
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + header_len :])


def claim_trained(metadata: dict[str, str]) -> None:
    metadata["info"] = json.dumps({**json.loads(metadata["info"]), "trained": True, "test_accuracy": 99.9})


def test_saved_and_updated_info_is_verified(tmp_path: Path, checkpoint: Path) -> None:
    model = calibrated_model(SPLIT_POINT)
    save_checkpoint(model, model.config, tmp_path / "m.safetensors", TrainingRecord(trained=True))
    saved = read_checkpoint_info(tmp_path / "m.safetensors")
    assert saved.info_verified and saved.trained
    edit_metadata_by_hand(checkpoint, claim_trained)
    update_info(checkpoint, read_checkpoint_info(checkpoint).info)  # writing info through the code vouches for it
    assert read_checkpoint_info(checkpoint).info_verified and read_checkpoint_info(checkpoint).trained


def test_hand_edited_info_is_unverified_and_never_trained(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = read_checkpoint_info(checkpoint)
    assert before.info_verified and not before.trained
    edit_metadata_by_hand(checkpoint, claim_trained)
    after = read_checkpoint_info(checkpoint)
    assert after.info.trained is True and after.info.test_accuracy == 99.9  # shown, but as unverified
    assert not after.info_verified and not after.trained
    assert after.fingerprint == before.fingerprint  # the weights still pair: the head and tail keep working
    with caplog.at_level("WARNING", logger="sbn.checkpoint"):
        assert not load_checkpoint(checkpoint, "tail").checkpoint.trained
    assert "does not match its info_digest" in caplog.text


def test_info_moved_from_another_checkpoint_with_its_digest_is_unverified(tmp_path: Path, checkpoint: Path) -> None:
    other = calibrated_model(SPLIT_POINT, seed=1)  # other weights, hence another fingerprint
    save_checkpoint(other, other.config, tmp_path / "trained.safetensors", TrainingRecord(trained=True))
    with safe_open(str(tmp_path / "trained.safetensors"), framework="pt") as f:
        donor = f.metadata()
    assert donor["fingerprint"] != read_checkpoint_info(checkpoint).fingerprint

    def transplant(metadata: dict[str, str]) -> None:
        metadata["info"], metadata["info_digest"] = donor["info"], donor["info_digest"]

    edit_metadata_by_hand(checkpoint, transplant)
    moved = read_checkpoint_info(checkpoint)
    assert moved.info == TrainingRecord(trained=True) and not moved.info_verified and not moved.trained


def test_info_without_a_digest_from_before_it_existed_is_unverified(checkpoint: Path) -> None:
    edit_metadata_by_hand(checkpoint, lambda metadata: metadata.pop("info_digest"))
    old = read_checkpoint_info(checkpoint)
    assert not old.info_verified
    load_checkpoint(checkpoint)  # still loads: only the info's claims are withheld


# --- the info as a TrainingRecord ---------------------------------------------------------------------------------

# every checkpoint this repository holds: the shipped models, their backbones, and a file from before plug-in backbones
STORED = [
    *sorted(DEFAULT_MODEL_DIR.glob("*.safetensors")),
    *sorted(BACKBONE_DIR.glob("*.safetensors")),
    Path(__file__).parents[1] / "data" / "pre_plugin_digits_rb8.safetensors",
]
# a digits-era calibration's names for two of its fields
DIGITS_ERA_NAMES = {"flagged_test_fraction": "flagged_fraction", "test_images": "calibration_images"}


def stored_metadata(path: Path) -> dict[str, str]:
    """The metadata as the file holds it, read with safetensors alone."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_every_stored_checkpoint_reads_into_the_record_with_its_stored_values(path: Path) -> None:
    stored = json.loads(stored_metadata(path)["info"])
    record = read_checkpoint_info(path).info
    assert record.extra == {}  # every stored key is a field
    for key, value in stored.items():
        held = getattr(record, key)
        if key == "uncertainty":
            expected = {DIGITS_ERA_NAMES.get(name, name): v for name, v in value.items()}
            assert {name: getattr(held, name) for name in expected} == expected
            assert "max_ink" in value or held.max_ink is None
        elif isinstance(value, dict):  # entropy_codec
            assert {name: getattr(held, name) for name in value} == value
        else:  # the very value: 16.0 stays a float, 2 an int, true a bool
            assert held == value and type(held) is type(value), key
    unrecorded = {f.name for f in dataclasses.fields(record)} - stored.keys() - {"trained", "extra"}
    assert all(getattr(record, name) is None for name in unrecorded)


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_rewriting_a_stored_info_gives_back_the_same_json_and_digest(path: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copy(path, tmp_path / path.name))
    before = stored_metadata(copy)
    update_info(copy, read_checkpoint_info(copy).info)  # the record read, written back as JSON
    after = stored_metadata(copy)
    assert after["info"] == before["info"]  # byte for byte
    if "info_digest" in before:  # the pre-plugin file predates it: rewriting gives it one
        assert after["info_digest"] == before["info_digest"]
    assert read_checkpoint_info(copy).info_verified


def test_info_keys_this_version_does_not_know_are_kept_through_a_rewrite(checkpoint: Path) -> None:
    unknown = {"top1": 0.5, "notes": ["first run"]}
    edit_metadata_by_hand(checkpoint, lambda m: m.update(info=json.dumps({"trained": False, **unknown})))
    record = read_checkpoint_info(checkpoint).info
    assert record.extra == unknown
    update_info(checkpoint, dataclasses.replace(record, test_accuracy=12.5))
    assert json.loads(stored_metadata(checkpoint)["info"]) == {"trained": False, "test_accuracy": 12.5, **unknown}


CODEC_FIGURES = {
    "fitted_on": "digits training split, 8 images",
    "test_images": 8,
    "raw_bytes": 16,
    "entropy_mean_bytes": 9.5,
    "first_order_bound_bytes": 8.25,
}
# name: (the stored info, a word the refusal must name)
MALFORMED: dict[str, tuple[Any, str]] = {
    "not an object": ([{"trained": True}], "not an object"),
    "a string accuracy": ({"trained": True, "test_accuracy": "high"}, "test_accuracy"),
    "a string flag": ({"trained": "yes"}, "trained"),
    "a fraction of an epoch": ({"epochs": 2.5}, "epochs"),
    "a bool for a number": ({"accuracy_drop": True}, "accuracy_drop"),
    "a calibration without its image count": (
        {"uncertainty": {"threshold": 0.5, "flagged_fraction": 0.02}},
        "calibration_images",
    ),
    "a number for a calibration": ({"uncertainty": 0.5}, "uncertainty"),
    "a string threshold": (
        {"uncertainty": {"threshold": "0.5", "flagged_fraction": 0.02, "calibration_images": 9}},
        "threshold",
    ),
    "a codec figure too many": ({"entropy_codec": {**CODEC_FIGURES, "bits": 3}}, "bits"),
    "a flip probability above 1": ({"wire_training": {"flip_probability": 1.5}}, "flip_probability"),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_info_is_refused_naming_the_file_and_the_field(checkpoint: Path, kind: str) -> None:
    info, named = MALFORMED[kind]
    edit_metadata_by_hand(checkpoint, lambda m: m.update(info=json.dumps(info)))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(checkpoint)
    message = str(refused.value)
    assert message.startswith(f"{checkpoint}: malformed info") and named in message, message


def test_well_formed_figures_pass_the_same_check(checkpoint: Path) -> None:
    info = {
        "trained": False,
        "entropy_codec": CODEC_FIGURES,
        "wire_training": {"flip_probability": 0.5},
        "uncertainty": {"threshold": 0.5, "flagged_fraction": 0.02, "calibration_images": 9},
    }
    edit_metadata_by_hand(checkpoint, lambda m: m.update(info=json.dumps(info)))
    record = read_checkpoint_info(checkpoint).info
    assert record.entropy_codec.raw_bytes == 16 and record.wire_training.flip_probability == 0.5
    assert record.uncertainty.calibration_images == 9
