"""A real ``sbn device`` process in front of a real edge: classification, probes, and every HTTP error,
after which it still classifies."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port, spawn, stop, wait_for_http
from tests.stack import EdgeProcess, monolithic_logits, upload

UPLOAD_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def checkpoint(calibrated_checkpoint: Callable[..., Path]) -> Path:
    return calibrated_checkpoint(8)


@pytest.fixture(scope="module")
def client(checkpoint: Path, edges: dict[int, EdgeProcess]) -> Iterator[httpx.Client]:
    port = free_port()
    process = spawn(
        "device",
        "--checkpoint",
        str(checkpoint),
        "--port",
        str(port),
        "--edge-address",
        edges[8].address,
        "--max-upload-bytes",
        str(UPLOAD_LIMIT),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client
    finally:
        # uvicorn drains, runs the lifespan's exit, then re-raises the SIGTERM it caught: -SIGTERM, not a kill
        assert stop(process) in (0, -signal.SIGTERM), "the device did not shut down cleanly on SIGTERM"


def test_classify_matches_the_monolithic_model(client: httpx.Client, checkpoint: Path) -> None:
    image = synthetic_png(seed=5, size=(40, 48))  # not 32 x 32: the device resizes
    response = client.post("/classify", params={"logits": "true"}, files=upload(image))
    assert response.status_code == 200, response.text
    body = response.json()
    reference = monolithic_logits(checkpoint, image)
    assert body["class_index"] == int(reference.argmax())
    torch.testing.assert_close(torch.tensor(body["logits"]), reference, rtol=0, atol=1e-5)
    assert "logits" not in client.post("/classify", files=upload(image)).json()


def test_ready_when_the_edge_serves_the_same_model(client: httpx.Client, edges: dict[int, EdgeProcess]) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["edge"] is None and response.json()["split_point"] == 8  # the address: only with a key
    assert (response.json()["arch"], response.json()["split_point_name"]) == ("spiking_resnet50", "RB8")


# (files, status, words the detail must contain)
BAD_UPLOADS = {
    "missing file": ({"picture": ("a.png", synthetic_png(), "image/png")}, 422, ["file", "required"]),
    "text file": (upload(b"hello\n", "hello.txt", "text/plain"), 400, ["not an image"]),
    "truncated PNG": (upload(synthetic_png()[:60]), 400, ["truncated"]),
    "oversize": (upload(bytes(UPLOAD_LIMIT + 1)), 413, [f"{UPLOAD_LIMIT}-byte upload limit"]),
}


@pytest.mark.parametrize("files, status, words", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_a_bad_upload_is_refused_and_the_device_goes_on(
    client: httpx.Client, files: dict, status: int, words: list[str]
) -> None:
    response = client.post("/classify", files=files)
    assert response.status_code == status
    for word in words:
        assert word in response.json()["detail"].lower()
    assert client.post("/classify", files=upload(synthetic_png())).status_code == 200


def test_metrics_cover_requests_latency_bytes_and_energy(client: httpx.Client) -> None:
    client.post("/classify", files=upload(synthetic_png()))
    metrics = client.get("/metrics").text
    for name in (
        'sbn_device_classify_requests_total{status="200"}',
        "sbn_device_classify_latency_seconds_count",
        "sbn_device_transmitted_bytes_total",
        'sbn_device_energy_millijoules_total{estimate="device_45nm"}',
    ):
        assert name in metrics
