"""POST /classify/batch through a real ``sbn device`` process and a real ``sbn edge`` process: the same
answers as single requests, in exactly one frame on the wire (counted by the edge's Prometheus metrics)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port, spawn, stop, stop_all, wait_for_edge, wait_for_http
from tests.stack import device_client, scraped, start_edge, upload

MAX_BATCH = 4


@dataclass
class Stack:
    device: httpx.Client
    edge_address: str
    edge_metrics_url: str

    def edge_counts(self) -> tuple[float, float]:
        """(frames the edge answered OK, images it ran) so far."""
        return (
            scraped(self.edge_metrics_url, "sbn_edge_frames_total", code="OK"),
            scraped(self.edge_metrics_url, "sbn_edge_images_total"),
        )


@pytest.fixture(scope="module")
def checkpoint(calibrated_checkpoint: Callable[..., Path]) -> Path:
    return calibrated_checkpoint(8)


@pytest.fixture(scope="module")
def stack(checkpoint: Path) -> Iterator[Stack]:
    """An edge of its own (its frame count is this module's alone) with metrics on, and a device process."""
    metrics_port, device_port = free_port(), free_port()
    edge = start_edge(checkpoint, None, "--metrics-port", str(metrics_port))
    device = None
    try:
        wait_for_edge(edge.address, edge.process)
        device = spawn(
            "device",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(device_port),
            "--edge-address",
            edge.address,
            "--max-batch",
            str(MAX_BATCH),
        )
        url = f"http://127.0.0.1:{device_port}"
        wait_for_http(f"{url}/healthz", device)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield Stack(client, edge.address, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        if device is not None:
            assert stop(device) in (0, -signal.SIGTERM)
        stop_all([edge.process])


def batch_files(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"image{i}.png", image, "image/png")) for i, image in enumerate(images)]


IMAGES = [synthetic_png(seed=11), synthetic_png(seed=12, size=(40, 48)), synthetic_png(seed=13, size=(64, 64))]


def test_a_batch_is_one_frame_with_the_answers_of_single_requests(stack: Stack) -> None:
    frames, images = stack.edge_counts()
    params = {"logits": "true", "spikes": "true"}
    response = stack.device.post("/classify/batch", params=params, files=batch_files(*IMAGES))
    assert response.status_code == 200, response.text
    assert stack.edge_counts() == (frames + 1, images + len(IMAGES))  # exactly one frame for all three

    body = response.json()
    batch = body["batch"]
    entries = body["results"]
    assert [entry["index"] for entry in entries] == [0, 1, 2]
    assert [entry["filename"] for entry in entries] == ["image0.png", "image1.png", "image2.png"]
    singles = [stack.device.post("/classify", params=params, files=upload(image)).json() for image in IMAGES]
    for entry, single in zip(entries, singles, strict=True):
        assert "error" not in entry
        torch.testing.assert_close(torch.tensor(entry["logits"]), torch.tensor(single["logits"]), rtol=0, atol=1e-5)
        assert (entry["label"], entry["class_index"]) == (single["label"], single["class_index"])
        assert entry["spikes"] == single["spikes"]  # the image's own slice of the frame
        assert entry["probability"] == pytest.approx(single["probability"], abs=1e-6)
        # energy: the image's own spikes, as when it is sent alone
        radio = {"transmit_mj", "device_total_mj"}
        for name, value in single["energy"].items():
            if name not in radio:
                assert entry["energy"][name] == pytest.approx(value, rel=1e-9), name
        # the radio's share: the device's default link (Wi-Fi, BottleNet's figures) x the image's bytes, by hand
        wifi_mj_per_byte = (283.17 * 18.88 + 132.86) * 8 / 18.88e6
        assert entry["energy"]["transmit_mj"] == pytest.approx(wifi_mj_per_byte * entry["message_bytes"])
        assert single["energy"]["transmit_mj"] == pytest.approx(wifi_mj_per_byte * single["message_bytes"])
        assert entry["energy"]["device_total_mj"] == pytest.approx(
            entry["energy"]["device_45nm_mj"] + entry["energy"]["transmit_mj"]
        )
        # RB8's T*C'*H'*W' = 4*4*8*8 bits is a whole number of bytes: the raw share is the single payload
        assert (entry["codec"], entry["transmitted_bytes"]) == ("raw", single["transmitted_bytes"])
        assert entry["message_bytes"] < single["message_bytes"]  # the envelope is shared
        assert entry["compression_ratio"] == pytest.approx(single["compression_ratio"])
        assert entry["image_bytes"] == len(IMAGES[entry["index"]])
        assert entry["latency_ms"] == batch["latency_ms"]

    t, c, h, w = singles[0]["spike_shape"]
    assert batch["frame_shape"] == [t, len(IMAGES), c, h, w]
    assert (batch["images"], batch["classified"], batch["failed"], batch["frames"]) == (3, 3, 0, 1)
    assert batch["transmitted_bytes"] == sum(entry["transmitted_bytes"] for entry in entries) == 3 * t * c * h * w // 8
    assert batch["message_bytes"] == sum(entry["message_bytes"] for entry in entries)
    assert batch["latency_ms"]["total"] >= batch["latency_ms"]["device"] + batch["latency_ms"]["edge"] > 0


def test_a_bad_image_fails_only_its_own_entry(stack: Stack) -> None:
    frames, images = stack.edge_counts()
    files = batch_files(IMAGES[0], b"this is not an image", IMAGES[2])
    response = stack.device.post("/classify/batch", params={"logits": "true"}, files=files)
    assert response.status_code == 200, response.text
    assert stack.edge_counts() == (frames + 1, images + 2)  # the two readable images, still one frame
    good, bad, other = response.json()["results"]
    assert bad == {"index": 1, "filename": "image1.png", "error": bad["error"]} and "not an image" in bad["error"]
    single = stack.device.post("/classify", params={"logits": "true"}, files=upload(IMAGES[2])).json()
    assert (good["index"], other["index"]) == (0, 2)
    torch.testing.assert_close(torch.tensor(other["logits"]), torch.tensor(single["logits"]), rtol=0, atol=1e-5)
    batch = response.json()["batch"]
    assert (batch["classified"], batch["failed"], batch["frame_shape"][1]) == (2, 1, 2)


def test_too_many_files_are_refused_before_any_frame(stack: Stack) -> None:
    frames, _ = stack.edge_counts()
    response = stack.device.post(
        "/classify/batch", files=batch_files(*[synthetic_png(seed=i) for i in range(MAX_BATCH + 1)])
    )
    assert response.status_code == 413
    assert f"at most {MAX_BATCH}" in response.json()["detail"]
    assert stack.edge_counts()[0] == frames
    assert stack.device.post("/classify/batch", files=batch_files(*IMAGES)).status_code == 200  # and it goes on


def test_two_file_fields_on_classify_are_422_naming_the_batch_endpoint(stack: Stack) -> None:
    frames, _ = stack.edge_counts()
    files = [("file", ("a.png", IMAGES[0], "image/png")), ("file", ("b.png", IMAGES[1], "image/png"))]
    response = stack.device.post("/classify", files=files)
    assert response.status_code == 422
    assert "POST /classify/batch" in response.json()["detail"]
    assert stack.edge_counts()[0] == frames  # neither image was classified


def test_a_wrong_field_name_is_422_saying_the_field_is_named_file(stack: Stack) -> None:
    response = stack.device.post("/classify", files={"image": ("a.png", IMAGES[0], "image/png")})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "named `file`" in detail and "`image`" in detail


def test_a_sparse_batch_splits_its_one_stream_evenly(stack: Stack, checkpoint: Path) -> None:
    with device_client(checkpoint, stack.edge_address, codec="sparse") as client:
        frames, _ = stack.edge_counts()
        body = client.post("/classify/batch", params={"logits": "true"}, files=batch_files(*IMAGES)).json()
        assert stack.edge_counts()[0] == frames + 1
    reference = stack.device.post("/classify/batch", params={"logits": "true"}, files=batch_files(*IMAGES)).json()
    entries, batch = body["results"], body["batch"]
    assert batch["codec"] == "sparse" and {entry["codec"] for entry in entries} == {"sparse"}
    shares = [entry["transmitted_bytes"] for entry in entries]
    assert sum(shares) == batch["transmitted_bytes"] and max(shares) - min(shares) <= 1
    for entry, raw in zip(entries, reference["results"], strict=True):  # the codec changes bytes, not answers
        torch.testing.assert_close(torch.tensor(entry["logits"]), torch.tensor(raw["logits"]), rtol=0, atol=1e-5)
        assert entry["compression_ratio"] == pytest.approx(
            raw["compression_ratio"] * reference["batch"]["transmitted_bytes"] / batch["transmitted_bytes"]
        )
