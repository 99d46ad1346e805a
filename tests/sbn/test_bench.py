"""``sbn bench --json``: real edge and device processes, one object per concurrency level."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from spikebottlenet.sbn.cli import main

FIELDS = {
    "concurrency",
    "split_p50_ms",
    "split_p99_ms",
    "split_body_p50_ms",
    "split_body_rps",
    "monolithic_p50_ms",
    "split_rps",
    "monolithic_rps",
    "mean_head_batch",
    "mean_edge_batch",
}


def test_json_has_one_object_per_concurrency_level(
    calibrated_checkpoint: Callable[..., Path], capfd: pytest.CaptureFixture[str]
) -> None:
    checkpoint = calibrated_checkpoint(8)
    assert (
        main(
            [
                "bench",
                "--checkpoint",
                str(checkpoint),
                "--json",
                "--requests",
                "24",
                "--warmup",
                "4",
                "--concurrency",
                "1",
                "8",
            ]
        )
        == 0
    )
    levels = json.loads(capfd.readouterr().out)  # stdout holds the JSON alone: the children log to stderr
    assert [level["concurrency"] for level in levels] == [1, 8]
    for level in levels:
        assert set(level) == FIELDS
        assert 0 < level["split_p50_ms"] <= level["split_p99_ms"]
        assert level["split_rps"] > 0 and level["monolithic_rps"] > 0 and level["monolithic_p50_ms"] > 0
        assert level["split_body_p50_ms"] > 0 and level["split_body_rps"] > 0
        assert 1 <= level["mean_head_batch"] <= level["concurrency"]
        assert 1 <= level["mean_edge_batch"] <= level["concurrency"]
    # one request at a time: nothing to batch with, on either half
    assert (levels[0]["mean_head_batch"], levels[0]["mean_edge_batch"]) == (1, 1)
