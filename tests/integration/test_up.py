"""``sbn up``: both halves as child processes, stopped together on SIGTERM or when either dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench.e2e import synthetic_png
from sbn.up import free_port, stop, wait_for_http
from tests.stack import upload


def _children(pid: int) -> dict[str, int]:
    """{"edge" | "device": pid} of a process's children (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[3].decode(): int(child) for child in children}


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def up(calibrated_checkpoint: Callable[..., Path]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A running ``sbn up`` (device ready) and the device's URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "sbn", "up", "--checkpoint", str(calibrated_checkpoint(8)),
                                "--port", str(port), "--edge-port", str(free_port())])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/readyz", process)
        yield process, url
    finally:
        stop(process)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the children through Linux /proc")
def test_sigterm_stops_both_children(up: tuple[subprocess.Popen[bytes], str]) -> None:
    process, url = up
    assert httpx.post(f"{url}/classify", files=upload(synthetic_png()), timeout=30).status_code == 200
    children = _children(process.pid)
    assert set(children) == {"edge", "device"}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert all(_gone(pid) for pid in children.values())


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the children through Linux /proc")
def test_when_the_edge_dies_up_stops_the_device_and_fails(up: tuple[subprocess.Popen[bytes], str]) -> None:
    process, _ = up
    children = _children(process.pid)
    os.kill(children["edge"], signal.SIGKILL)
    assert process.wait(timeout=30) == 1
    assert _gone(children["device"])
