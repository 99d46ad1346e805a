"""Device -> edge over loopback gives the monolithic model's answer, at the first, a middle and the last split
of each backbone."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint_metadata import read_checkpoint_info
from spikebottlenet.shared.codec import encode
from tests.stack import EdgeProcess, device_client, monolithic_logits, upload

from .conftest import MOBILENET_SPLIT_POINTS, SPLIT_POINTS

CASES = [("spiking_resnet50", k, "edges", f"RB{k}") for k in SPLIT_POINTS] + [
    ("spiking_mobilenetv2", k, "mobilenet_edges", f"IRB{k}") for k in MOBILENET_SPLIT_POINTS
]


@pytest.mark.parametrize("arch, split_point, edges_fixture, name", CASES, ids=[case[3] for case in CASES])
def test_split_inference_matches_the_monolithic_model(
    arch: str,
    split_point: int,
    edges_fixture: str,
    name: str,
    request: pytest.FixtureRequest,
    calibrated_checkpoint: Callable[..., Path],
) -> None:
    checkpoint = calibrated_checkpoint(split_point, arch=arch)
    edge = request.getfixturevalue(edges_fixture)[split_point]
    image = synthetic_png(seed=split_point)
    with device_client(checkpoint, edge.address) as client:
        response = client.post("/classify", params={"logits": "true"}, files=upload(image))
        ready = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert ready.status_code == 200 and (ready.json()["arch"], ready.json()["split_point_name"]) == (arch, name)
    body = response.json()

    reference = monolithic_logits(checkpoint, image)
    assert body["class_index"] == int(reference.argmax())
    torch.testing.assert_close(torch.tensor(body["logits"]), reference, rtol=0, atol=1e-5)

    t, c, h, w = body["spike_shape"]
    assert (body["arch"], body["split_point"], body["split_point_name"]) == (arch, split_point, name)
    assert (body["time_steps"], body["codec"]) == (t, "raw")
    assert body["transmitted_bytes"] == math.ceil(t * c * h * w / 8)
    assert body["message_bytes"] > body["transmitted_bytes"]
    assert body["compression_ratio"] > 1
    assert body["energy"]["device_45nm_mj"] > 0 and 0 < body["energy"]["firing_rate"] < 1
    latency = body["latency_ms"]
    assert set(latency) == {"device", "queue", "edge", "network", "total"}
    assert latency["total"] >= latency["queue"] + latency["device"] + latency["edge"] > 0
    assert latency["network"] >= 0 and latency["queue"] >= 0
    assert (body["head_batch_images"], body["edge_batch_images"]) == (1, 1)  # one request at a time: alone
    assert body["model"]["trained"] is False and "meaningless" in body["model"]["note"]


@pytest.mark.parametrize("codec", ["sparse", "auto"])
def test_other_codecs_round_trip_to_the_same_logits(
    codec: str, edges: dict[int, EdgeProcess], calibrated_checkpoint: Callable[..., Path]
) -> None:
    checkpoint = calibrated_checkpoint(8)
    image = synthetic_png(seed=3)
    with device_client(checkpoint, edges[8].address, codec=codec) as client:
        body = client.post("/classify", params={"logits": "true"}, files=upload(image)).json()
    torch.testing.assert_close(torch.tensor(body["logits"]), monolithic_logits(checkpoint, image), rtol=0, atol=1e-5)

    spikes = HeadRunner.load(checkpoint).run(image).spikes
    sizes = {name: len(encode(spikes, name)[1]) for name in ("raw", "sparse")}
    expected = "sparse" if codec == "sparse" or sizes["sparse"] < sizes["raw"] else "raw"
    assert (body["codec"], body["transmitted_bytes"]) == (expected, sizes[expected])


def test_a_device_with_another_model_gets_502_naming_both_fingerprints(
    edges: dict[int, EdgeProcess], calibrated_checkpoint: Callable[..., Path]
) -> None:
    # Same architecture and split point, different weights: only the fingerprint tells them apart.
    ours, theirs = calibrated_checkpoint(8, seed=1), calibrated_checkpoint(8)
    with device_client(ours, edges[8].address) as client:
        classify = client.post("/classify", files=upload(synthetic_png()))
        readyz = client.get("/readyz")
    ours_fp, theirs_fp = (read_checkpoint_info(path).fingerprint for path in (ours, theirs))
    assert classify.status_code == 502
    assert readyz.status_code == 503
    for response in (classify, readyz):
        assert ours_fp in response.json()["detail"] and theirs_fp in response.json()["detail"]


def test_an_image_sent_as_the_body_itself_gets_the_monolithic_answer(
    edges: dict[int, EdgeProcess], calibrated_checkpoint: Callable[..., Path]
) -> None:
    checkpoint = calibrated_checkpoint(8)
    image = synthetic_png(seed=5)
    with device_client(checkpoint, edges[8].address) as client:
        raw = client.post("/classify?logits=true", content=image, headers={"Content-Type": "image/png"})
        charset = client.post("/classify?logits=true", content=image, headers={"Content-Type": "Image/PNG; x=1"})
        empty = client.post("/classify", content=b"", headers={"Content-Type": "image/png"})
        wrong_type = client.post("/classify", content=image, headers={"Content-Type": "application/json"})
    assert raw.status_code == charset.status_code == 200, raw.text
    reference = monolithic_logits(checkpoint, image)
    for body in (raw.json(), charset.json()):
        torch.testing.assert_close(torch.tensor(body["logits"]), reference, rtol=0, atol=1e-5)
        assert body["image_bytes"] == len(image)
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    # not an image type and not a form: the answer says both ways to send one
    assert wrong_type.status_code == 422
    assert "named `file`" in wrong_type.json()["detail"] and "Content-Type image/*" in wrong_type.json()["detail"]
