"""The device outlives its edge: 503 while the edge is down, 200 once it is up, without a device restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port, stop, stop_all, wait_for_edge
from tests.stack import device_client, start_edge, upload

DEADLINE_S = 3.0


def _poll_until_ready(client: httpx.Client, timeout_s: float = 10.0) -> httpx.Response:
    # The channel retries a refused edge with a backoff of at most 2 s, so readiness follows shortly.
    deadline = time.monotonic() + timeout_s
    while (response := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    return response


def test_503_while_the_edge_is_down_then_200_once_it_is_up(calibrated_checkpoint: Callable[..., Path]) -> None:
    checkpoint = calibrated_checkpoint(8)
    port = free_port()
    with device_client(checkpoint, f"127.0.0.1:{port}", deadline_s=DEADLINE_S) as client:
        start = time.monotonic()
        down = client.post("/classify", files=upload(synthetic_png()))
        assert down.status_code == 503 and time.monotonic() - start < DEADLINE_S
        assert f"127.0.0.1:{port}" not in down.json()["detail"]  # the edge's address goes to the log only

        edge = start_edge(checkpoint, port)
        try:
            wait_for_edge(edge.address, edge.process)
            assert _poll_until_ready(client).status_code == 200
            assert client.post("/classify", files=upload(synthetic_png())).status_code == 200

            assert stop(edge.process) == 0, "the edge did not shut down cleanly on SIGTERM"
            assert client.post("/classify", files=upload(synthetic_png())).status_code == 503
        finally:
            stop_all([edge.process])
