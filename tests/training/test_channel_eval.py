"""``sbn eval``: test accuracy with the frames crossing a lossy channel, in process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sbn.cli import main


def evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["eval", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_clean_channel_changes_nothing_and_a_noisy_one_flips_at_its_rate(
        calibrated_checkpoint: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = str(calibrated_checkpoint(8))
    clean = evaluate(capsys, "--checkpoint", checkpoint, "--channel", "bsc:0")
    assert (clean["accuracy"], clean["erased_frames"], clean["measured_ber"]) == (clean["clean_accuracy"], 0, 0)
    assert clean["test_images"] == 360 and clean["mean_payload_bytes"] == 128
    noisy = evaluate(capsys, "--checkpoint", checkpoint, "--channel", "bsc:0.2")
    assert noisy["measured_ber"] == pytest.approx(0.2, abs=0.01)  # 368,640 bits sent


def test_the_entropy_codec_erases_what_fails_its_crc(capsys: pytest.CaptureFixture[str]) -> None:
    # the shipped RB8 has a fitted model; at BER 1e-2 nearly every ~620-bit payload takes a flip
    result = evaluate(capsys, "--split-point", "8", "--channel", "bsc:1e-2", "--codec", "entropy")
    assert result["erased_frames"] > 0.9 * result["test_images"]
    assert result["mean_payload_bytes"] < 128


def test_a_model_without_an_entropy_model_is_a_one_line_error(calibrated_checkpoint: Callable[..., Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--checkpoint", str(calibrated_checkpoint(8)), "--channel", "bsc:0", "--codec",
                 "entropy"]) == 1
    assert "sbn eval: error" in capsys.readouterr().err
