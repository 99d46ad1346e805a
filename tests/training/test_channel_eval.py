"""``sbn eval``: test accuracy with the frames crossing a lossy channel, in process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from spikebottlenet.sbn.cli import main


def evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["eval", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_clean_channel_changes_nothing_and_a_noisy_one_flips_at_its_rate(
    calibrated_checkpoint: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = str(calibrated_checkpoint(8))
    clean = evaluate(capsys, "--checkpoint", checkpoint, "--channel", "bsc:0")
    assert (clean["accuracy"], clean["erased_chunks"], clean["measured_ber"]) == (clean["clean_accuracy"], 0, 0)
    assert clean["test_images"] == 360 and clean["mean_payload_bytes"] == 128
    noisy = evaluate(capsys, "--checkpoint", checkpoint, "--channel", "bsc:0.2")
    assert noisy["measured_ber"] == pytest.approx(0.2, abs=0.01)  # 368,640 bits sent


@pytest.mark.slow
def test_the_entropy_codec_erases_what_fails_its_crc_and_chunks_and_fec_lose_less(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the shipped RB8 (4 x 8 x 8 x 8 spikes: 256 raw bytes) has a fitted model; at BER 1e-2 nearly every
    # ~1,200-bit payload takes a flip
    first = ("--test-images", "500")  # of MNIST's 10,000
    whole = evaluate(capsys, "--split-point", "8", "--channel", "bsc:1e-2", "--codec", "entropy", *first)
    assert whole["test_images"] == 500
    assert whole["chunks_sent"] == whole["test_images"] and whole["erased_chunks"] > 0.9 * whole["test_images"]
    assert whole["mean_payload_bytes"] < 256
    # BER 1e-3: one coded stream per frame loses about 70 % of the frames (1 - 0.999^1200); four chunks (two of
    # C' = 8 channels each) lose about a quarter of the chunks, a quarter of a frame each, and the rest arrives
    whole = evaluate(capsys, "--split-point", "8", "--channel", "bsc:1e-3", "--codec", "entropy", *first)
    chunked = evaluate(
        capsys, "--split-point", "8", "--channel", "bsc:1e-3", "--codec", "entropy", "--chunks", "4", *first
    )
    assert chunked["erased_chunks"] / chunked["chunks_sent"] < 0.6 * whole["erased_chunks"] / whole["chunks_sent"]
    assert chunked["accuracy"] > whole["accuracy"]
    assert whole["mean_payload_bytes"] < chunked["mean_payload_bytes"]  # each chunk: its CRC, length, coder flush
    # 16 Reed-Solomon parity bytes per block correct up to 8 damaged bytes: at BER 1e-3 (~1.3 flips per frame)
    # nothing is left to erase, and the wire carries the parity on top of the coded bytes
    protected = evaluate(
        capsys, "--split-point", "8", "--channel", "bsc:1e-3", "--codec", "entropy", "--fec", "16", *first
    )
    assert protected["erased_chunks"] <= 1 and protected["accuracy"] >= protected["clean_accuracy"] - 0.5
    assert protected["mean_payload_bytes"] == pytest.approx(protected["mean_coded_bytes"] + 16)  # one block each


def test_a_model_without_an_entropy_model_is_a_one_line_error(
    calibrated_checkpoint: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["eval", "--checkpoint", str(calibrated_checkpoint(8)), "--channel", "bsc:0", "--codec", "entropy"]) == 1
    )
    assert "sbn eval: error" in capsys.readouterr().err
