"""``sbn plan``: both halves of each checkpoint measured here, the planner's table, JSON and picture."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from spikebottlenet.sbn.cli import main


@pytest.fixture(scope="module")
def checkpoints(calibrated_checkpoint: Callable[..., Path]) -> list[str]:
    return [arg for k in (3, 16) for arg in ("--checkpoint", str(calibrated_checkpoint(k)))]


def test_checkpoints_without_a_recorded_accuracy_drop_fit_no_budget(
    checkpoints: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", *checkpoints]) == 1
    assert "sbn plan: error: no split point within the 3.0 point accuracy-drop budget" in capsys.readouterr().err


def test_a_custom_slow_link_is_planned_by_its_formula(
    checkpoints: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["plan", *checkpoints, "--no-accuracy-budget", "--bandwidth-mbps", "0.05", "--rtt-ms", "10", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert (result["link"]["rate_mbps"], result["link"]["rtt_ms"]) == (0.05, 10)
    rows = result["split_points"]
    for row in rows:  # latency = device + bytes / rate + round trip + edge, written out
        assert row["latency_ms"] == pytest.approx(
            row["device_ms"] + row["message_bytes"] * 8 / 0.05e6 * 1e3 + 10 + row["edge_ms"]
        )
        assert row["device_ms"] > 0 and row["edge_ms"] > 0  # both halves measured here
    chosen = [row for row in rows if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["latency_ms"] == min(row["latency_ms"] for row in rows)
    assert (result["choice"]["split_point"], result["objective"]) == (chosen[0]["split_point"], "latency")


def test_the_plot_is_a_png(checkpoints: list[str], tmp_path: Path) -> None:
    picture = tmp_path / "plan.png"
    assert main(["plan", *checkpoints, "--no-accuracy-budget", "--plot", str(picture)]) == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
