"""Faults with real processes on 127.0.0.1: an edge killed under load, a slow edge, a busy edge, a device
restart. No request hangs past its deadline, and each side recovers without restarting the other."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port, spawn, stop_all, wait_for_edge, wait_for_http
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import EdgeProcess, device_client, monolithic_logits, start_edge, upload

SLOW_S = 1.0  # the slow edge's injected delay per frame
SLOW_SLOTS = 2  # and its max_concurrency


def classify(client: httpx.Client, image: bytes) -> tuple[httpx.Response, float]:
    """POST /classify; the response and when it arrived (time.monotonic)."""
    response = client.post("/classify", files=upload(image))
    return response, time.monotonic()


def concurrently(client: httpx.Client, image: bytes, n: int) -> list[tuple[httpx.Response, float]]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: classify(client, image), range(n)))


def poll_ready(client: httpx.Client, timeout_s: float = 15.0) -> float:
    """Seconds until /readyz is 200 (the channel retries a refused edge at least every 2 s)."""
    start = time.monotonic()
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() - start < timeout_s, "the device did not find the edge again"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def slow_edge(checkpoint: Path) -> Iterator[EdgeProcess]:
    edge = start_edge(checkpoint, None, "--inject-delay-s", str(SLOW_S), "--max-concurrency", str(SLOW_SLOTS))
    try:
        wait_for_edge(edge.address, edge.process)
        yield edge
    finally:
        stop_all([edge.process])


def test_a_slow_edge_gets_504_at_the_deadline_and_stays_ready(
    slow_edge: EdgeProcess, checkpoint: Path, report: Callable[[str], None]
) -> None:
    deadline_s = 0.3
    with device_client(checkpoint, slow_edge.address, deadline_s=deadline_s) as client:
        start = time.monotonic()
        response, answered = classify(client, synthetic_png())
        assert response.status_code == 504
        assert "DEADLINE_EXCEEDED" in response.json()["detail"]
        assert answered - start < SLOW_S, "the device waited for the edge past its deadline"
        assert client.get("/readyz").status_code == 200  # slow, not down: model info is not delayed
    report(
        f"slow edge ({SLOW_S:g} s per frame, deadline {deadline_s:g} s): 504 after {answered - start:.2f} s, "
        f"/readyz still 200"
    )


def test_more_uploads_than_edge_slots_wait_for_a_slot_instead_of_failing(
    slow_edge: EdgeProcess, checkpoint: Path, report: Callable[[str], None]
) -> None:
    uploads = 3 * SLOW_SLOTS
    with device_client(checkpoint, slow_edge.address, deadline_s=10.0, max_edge_calls=SLOW_SLOTS) as client:
        start = time.monotonic()
        results = concurrently(client, synthetic_png(), uploads)
    assert [r.status_code for r, _ in results] == [200] * uploads
    assert max(t for _, t in results) - start >= (uploads / SLOW_SLOTS - 0.5) * SLOW_S  # in waves of SLOW_SLOTS
    report(
        f"busy edge ({SLOW_SLOTS} slots): {uploads} concurrent uploads through a device with "
        f"max_edge_calls={SLOW_SLOTS}: {uploads}/{uploads} answered 200, queued on the device"
    )


def test_without_the_device_bound_a_busy_edge_refuses_with_503(slow_edge: EdgeProcess, checkpoint: Path) -> None:
    # the counter-case: a device allowing more calls than the edge has slots gets RESOURCE_EXHAUSTED
    uploads = 2 * SLOW_SLOTS
    with device_client(checkpoint, slow_edge.address, deadline_s=10.0, max_edge_calls=uploads) as client:
        statuses = sorted(r.status_code for r, _ in concurrently(client, synthetic_png(), uploads))
        after = client.post("/classify", files=upload(synthetic_png()))  # the slots are free again
    assert statuses == [200] * SLOW_SLOTS + [503] * (uploads - SLOW_SLOTS)
    assert after.status_code == 200


def test_requests_in_flight_when_the_edge_is_killed_get_503_and_a_restarted_edge_serves(
    checkpoint: Path, report: Callable[[str], None]
) -> None:
    in_flight, deadline_s, delay_s = 8, 8.0, 3.0
    port = free_port()
    edge = start_edge(checkpoint, port, "--inject-delay-s", str(delay_s))
    restarted: EdgeProcess | None = None
    image = synthetic_png(seed=4)
    try:
        wait_for_edge(edge.address, edge.process)
        with (
            device_client(checkpoint, edge.address, deadline_s=deadline_s) as client,
            ThreadPoolExecutor(in_flight) as pool,
        ):
            sent = time.monotonic()
            pending = [pool.submit(classify, client, image) for _ in range(in_flight)]
            time.sleep(1.5)  # every frame is at the edge (heads take milliseconds), inside its delay
            assert not any(f.done() for f in pending)
            os.kill(edge.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            results = [f.result(timeout=deadline_s + 5) for f in pending]
            assert [r.status_code for r, _ in results] == [503] * in_flight
            assert all("UNAVAILABLE" in r.json()["detail"] for r, _ in results)
            latest = max(t for _, t in results)
            assert latest - sent < deadline_s and all(t >= killed for _, t in results)

            restarted = start_edge(checkpoint, port)  # same port, no delay
            wait_for_edge(restarted.address, restarted.process)
            ready_after = poll_ready(client)
            response = client.post("/classify", params={"logits": "true"}, files=upload(image))
        assert response.status_code == 200
        torch.testing.assert_close(
            torch.tensor(response.json()["logits"]), monolithic_logits(checkpoint, image), rtol=0, atol=1e-5
        )
    finally:
        stop_all([edge.process, *([restarted.process] if restarted else [])])
    report(
        f"edge SIGKILLed with {in_flight} requests in flight: {in_flight}/{in_flight} answered 503 within "
        f"{latest - killed:.2f} s of the kill (deadline {deadline_s:g} s), none hung; an edge restarted on the "
        f"same port: the same device, not restarted, ready again within {ready_after:.1f} s and answering "
        f"correctly"
    )


def test_a_device_restart_leaves_the_edge_serving_another_client(
    edge: EdgeProcess, checkpoint: Path, report: Callable[[str], None]
) -> None:
    frame = HeadRunner.load(checkpoint).run(synthetic_png()).frame
    reference = monolithic_logits(checkpoint, synthetic_png())
    answers: list[bool] = []  # per call of the other client: the right logits?
    done = threading.Event()

    def other_client() -> None:  # bounded: stops when told, or after 2,000 calls
        with grpc.insecure_channel(edge.address) as channel:
            stub = pb_grpc.SplitInferenceStub(channel)
            while not done.is_set() and len(answers) < 2000:
                reply = stub.Infer(frame, timeout=5)
                answers.append(torch.allclose(torch.tensor(reply.values), reference, rtol=0, atol=1e-5))
                time.sleep(0.01)

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start_device() -> subprocess.Popen[bytes]:
        process = spawn("device", "--checkpoint", str(checkpoint), "--port", str(port), "--edge-address", edge.address)
        wait_for_http(f"{url}/readyz", process)
        return process

    devices = [start_device()]
    with ThreadPoolExecutor(2) as pool:  # the other client, and uploads to the device
        other = pool.submit(other_client)
        try:
            with httpx.Client(base_url=url, timeout=10) as client:
                assert client.post("/classify", files=upload(synthetic_png())).status_code == 200

                def upload_until_the_device_dies() -> int:  # bounded: 500 uploads at most
                    for answered in range(500):
                        try:
                            client.post("/classify", files=upload(synthetic_png()))
                        except httpx.TransportError:
                            return answered
                    raise AssertionError("the device answered on after it was killed")

                uploads = pool.submit(upload_until_the_device_dies)
                time.sleep(0.2)
                os.kill(devices[0].pid, signal.SIGKILL)  # a crash, with uploads under way
                devices[0].wait(timeout=10)
                uploads.result(timeout=30)  # ended by the crash
                during = len(answers)
                devices.append(start_device())
                response = client.post("/classify", params={"logits": "true"}, files=upload(synthetic_png()))
            assert response.status_code == 200
            torch.testing.assert_close(torch.tensor(response.json()["logits"]), reference, rtol=0, atol=1e-5)
        finally:
            done.set()
            other.result(timeout=30)
            stop_all(devices)
    assert answers and all(answers) and len(answers) > during
    assert edge.process.poll() is None
    with grpc.insecure_channel(edge.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    report(
        f"device SIGKILLed mid-upload and restarted on the same port: the edge's other client got "
        f"{len(answers)}/{len(answers)} correct answers throughout; the restarted device classified correctly"
    )
