"""``sbn models`` lists exactly the embedded checkpoints, with figures that agree with their files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from spikebottlenet.sbn.cli import main
from spikebottlenet.shared.checkpoint_metadata import DEFAULT_MODEL_DIR, read_checkpoint_info
from tests.shared.test_checkpoint import stored_metadata


def test_sbn_models_json_describes_every_shipped_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["file"] for row in rows) == sorted(p.name for p in DEFAULT_MODEL_DIR.glob("*.safetensors"))
    assert {row["arch"] for row in rows} == {"spiking_resnet50", "spiking_mobilenetv2"}
    for row in rows:
        ckpt = read_checkpoint_info(DEFAULT_MODEL_DIR / row["file"])
        t, c, h, w = row["spike_shape"]
        assert (
            (t, c) == (row["time_steps"], row["channels"]) == (ckpt.config.time_steps, ckpt.config.bottleneck.channels)
        )
        assert row["transmitted_bytes"] == -(-t * c * h * w // 8)  # one bit per spike, rounded up to bytes
        prefix = "IRB" if row["arch"] == "spiking_mobilenetv2" else "RB"
        assert row["split_point_name"] == f"{prefix}{row['split_point']}"
        stored = json.loads(stored_metadata(ckpt.path)["info"])  # read apart from the record sbn models shows
        assert row["fingerprint"] == ckpt.fingerprint and row["test_accuracy"] == stored["test_accuracy"]
        assert row["validation_accuracy"] == stored.get("validation_accuracy")
        assert row["dataset"] == stored["dataset"]
        assert row["entropy_bytes"] == stored["entropy_codec"]["entropy_mean_bytes"]
        assert row["info_verified"] is True


def test_sbn_models_table_has_a_line_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "arch" in lines[0] and "validation %" in lines[0] and "test %" in lines[0]
    assert len(lines) == 1 + len(list(DEFAULT_MODEL_DIR.glob("*.safetensors")))
    assert any("IRB8" in line and "spiking_mobilenetv2" in line for line in lines)


def test_sbn_models_marks_accuracies_edited_after_saving_as_unverified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with safe_open(str(DEFAULT_MODEL_DIR / "mnist_rb8.safetensors"), framework="pt") as f:
        metadata, tensors = f.metadata(), {name: f.get_tensor(name) for name in f.keys()}
    edited = {**json.loads(metadata["info"]), "test_accuracy": 99.99}  # info_digest left as it was
    save_file(tensors, str(tmp_path / "mnist_rb8.safetensors"), metadata={**metadata, "info": json.dumps(edited)})
    monkeypatch.setattr("spikebottlenet.shared.checkpoint_metadata.DEFAULT_MODEL_DIR", tmp_path)
    assert main(["models"]) == 0
    assert "99.99 (unverified)" in capsys.readouterr().out
