"""Edge replicas behind one device target: calls spread over them (round robin), /readyz counts the ones that
answer, and a replica killed under load costs no request."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.processes import free_port, stop_all, wait_for_edge
from tests.stack import EdgeProcess, device_client, scraped, start_edge, upload

RB8 = default_checkpoint("spiking_resnet50", 8)
API_KEY = "replicas-test-key"


@pytest.fixture
def replicas() -> Iterator[list[tuple[EdgeProcess, str]]]:
    """Two edges on 127.0.0.1, each with its metrics URL."""
    started = []
    try:
        for _ in range(2):
            metrics_port = free_port()
            edge = start_edge(RB8, None, "--metrics-port", str(metrics_port))
            started.append((edge, f"http://127.0.0.1:{metrics_port}/metrics"))
        for edge, _ in started:
            wait_for_edge(edge.address, edge.process)
        yield started
    finally:
        stop_all([edge.process for edge, _ in started])


def answered(metrics_url: str) -> float:
    return scraped(metrics_url, "sbn_edge_frames_total", code="OK")


def test_calls_take_turns_over_the_replicas_and_a_killed_one_loses_nothing_unsent(
    replicas: list[tuple[EdgeProcess, str]],
) -> None:
    (first, first_metrics), (second, second_metrics) = replicas
    target = f"ipv4:{first.address},{second.address}"
    with device_client(RB8, target, api_key=API_KEY) as client:
        client.headers["X-API-Key"] = API_KEY  # /readyz lists the replicas' addresses only with it
        ready = client.get("/readyz").json()
        assert ready["edge_replicas"] == 2 and sorted(ready["edge_addresses"]) == sorted(
            [first.address, second.address]
        )
        for seed in range(40):
            assert client.post("/classify", files=upload(synthetic_png(seed))).status_code == 200
        # round robin: the calls alternate over the two ready connections (warm-up probes aside)
        assert answered(first_metrics) >= 15 and answered(second_metrics) >= 15
        second.process.send_signal(signal.SIGKILL)
        second.process.wait(timeout=10)
        for _ in range(100):  # the device's channel sees the connection go; /readyz sees the replica go
            if client.get("/readyz").json().get("edge_replicas") == 1:
                break
            time.sleep(0.05)
        assert client.get("/readyz").json()["edge_replicas"] == 1
        before = answered(first_metrics)
        codes = [client.post("/classify", files=upload(synthetic_png(seed))).status_code for seed in range(20)]
    assert codes == [200] * 20  # every request after the kill went to the replica still up
    assert answered(first_metrics) - before == 20


def test_a_replica_killed_under_load_costs_no_request(replicas: list[tuple[EdgeProcess, str]]) -> None:
    """Frames in flight to the killed replica, or sent before the device's channel saw it go, fail UNAVAILABLE
    and are sent again to the other (the channel's retry policy): every request is answered."""
    (first, first_metrics), (second, _) = replicas
    with device_client(RB8, f"ipv4:{first.address},{second.address}") as client:

        def classify(seed: int) -> int:
            if seed == 30:  # under load: eight uploads in flight
                second.process.send_signal(signal.SIGKILL)
            return client.post("/classify", files=upload(synthetic_png(seed))).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(classify, range(80)))
    assert codes == [200] * 80
    assert second.process.wait(timeout=10) == -signal.SIGKILL
