"""``sbn up``'s plan: flag, else environment, else default; only given flags are passed to the children."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikebottlenet.sbn.up import StackError, plan_stack


def test_nothing_given_passes_only_the_wiring_and_uses_the_defaults() -> None:
    plan = plan_stack(environ={})
    assert plan.edge_flags == ["--host", "127.0.0.1"]
    assert plan.device_flags == ["--edge-address", "127.0.0.1:50051"]
    assert (plan.edge.port, plan.device.host, plan.device.port) == (50051, "127.0.0.1", 8000)
    assert (plan.edge.split_point, plan.device.split_point) == (8, 8)
    assert plan.device_url == "http://127.0.0.1:8000"


def test_the_environment_decides_what_no_flag_gives() -> None:
    plan = plan_stack(
        environ={
            "SBN_EDGE_PORT": "50052",
            "SBN_DEVICE_PORT": "18000",
            "SBN_SPLIT_POINT": "16",
            "SBN_ARCH": "mobilenetv2",
        }
    )
    assert plan.device_flags == ["--edge-address", "127.0.0.1:50052"]  # the edge's port from its variable
    assert plan.device_url == "http://127.0.0.1:18000"
    assert (plan.edge.arch, plan.edge.split_point) == ("spiking_mobilenetv2", 16)
    assert (plan.device.arch, plan.device.split_point) == ("spiking_mobilenetv2", 16)
    # the shared names reach the children as their own variables
    assert (plan.env["SBN_EDGE_SPLIT_POINT"], plan.env["SBN_DEVICE_ARCH"]) == ("16", "mobilenetv2")


def test_flags_win_over_the_environment_and_are_passed_on() -> None:
    plan = plan_stack(
        split_point=3,
        port=9000,
        edge_port=50099,
        environ={"SBN_SPLIT_POINT": "16", "SBN_DEVICE_PORT": "18000", "SBN_EDGE_PORT": "50052"},
    )
    assert plan.edge_flags == ["--host", "127.0.0.1", "--port", "50099", "--split-point", "3"]
    assert plan.device_flags == ["--port", "9000", "--edge-address", "127.0.0.1:50099", "--split-point", "3"]
    assert (plan.edge.split_point, plan.device.split_point, plan.device.port) == (3, 3, 9000)


def test_a_halfs_own_variable_wins_over_the_shared_one() -> None:
    plan = plan_stack(environ={"SBN_SPLIT_POINT": "16", "SBN_EDGE_SPLIT_POINT": "3", "SBN_DEVICE_SPLIT_POINT": "3"})
    assert (plan.edge.split_point, plan.device.split_point) == (3, 3)


def test_the_same_checkpoint_for_both_halves(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    plan = plan_stack(checkpoint=checkpoint, environ={"SBN_SPLIT_POINT": "16"})
    assert plan.edge_flags[-2:] == plan.device_flags[-2:] == ["--checkpoint", str(checkpoint)]


@pytest.mark.parametrize(
    "environ, words",
    [
        ({"SBN_EDGE_SPLIT_POINT": "16"}, ["edge would serve", "split point 16", "split point 8"]),
        ({"SBN_SPLIT_POINT": "99"}, ["invalid settings for the edge", "99"]),
        ({"SBN_DEVICE_PORT": "eighty"}, ["invalid settings for the device", "SBN_DEVICE_PORT"]),
        ({"SBN_EDGE_PORT": "0"}, ["fixed edge port"]),
    ],
)
def test_settings_that_cannot_make_a_stack_are_refused_in_one_line(environ: dict[str, str], words: list[str]) -> None:
    with pytest.raises(StackError) as e:
        plan_stack(environ=environ)
    assert "\n" not in str(e.value)
    for word in words:
        assert word in str(e.value)
