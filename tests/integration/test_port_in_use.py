"""A port another process holds: ``sbn edge`` and ``sbn up`` refuse it with one line and a failure status,
before starting anything. The port is held by a real listening socket on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spikebottlenet.shared.processes import free_port


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a listening socket of this test holds."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def sbn(*argv: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """``python -m spikebottlenet ARGV`` to its end: exit status and the non-empty lines of stdout and stderr
    together."""
    done = subprocess.run(
        [sys.executable, "-m", "spikebottlenet", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return done.returncode, [line for line in done.stdout.splitlines() if line.strip()]


def test_the_edge_refuses_a_taken_port_in_one_line(held_port: int, calibrated_checkpoint: Callable[..., Path]) -> None:
    status, lines = sbn(
        "edge", "--checkpoint", str(calibrated_checkpoint(8)), "--host", "127.0.0.1", "--port", str(held_port)
    )
    assert status != 0
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{held_port}" in lines[0] and "already in use" in lines[0]
    assert "Traceback" not in lines[0]


def test_up_refuses_a_taken_device_port_before_starting_the_edge(held_port: int) -> None:
    status, lines = sbn("up", "--port", str(held_port), "--edge-port", str(free_port()))
    assert status == 1
    # one line: had the edge started, its log lines ("serving the tail ...") would be here too
    assert len(lines) == 1, lines
    assert f"port {held_port}" in lines[0] and "device" in lines[0] and "already in use" in lines[0]


def test_up_refuses_a_taken_edge_port_from_the_environment(held_port: int) -> None:
    status, lines = sbn("up", "--port", str(free_port()), env={"SBN_EDGE_PORT": str(held_port)})
    assert status == 1
    assert len(lines) == 1, lines
    assert f"port {held_port}" in lines[0] and "edge" in lines[0] and "already in use" in lines[0]


def test_up_refuses_halves_that_would_serve_different_models() -> None:
    status, lines = sbn(
        "up",
        "--port",
        str(free_port()),
        "--edge-port",
        str(free_port()),
        env={"SBN_EDGE_SPLIT_POINT": "16", "SBN_DEVICE_SPLIT_POINT": "3"},
    )
    assert status == 1
    assert len(lines) == 1, lines
    assert "split point 16" in lines[0] and "split point 3" in lines[0]
