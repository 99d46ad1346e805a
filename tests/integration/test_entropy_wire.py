"""The entropy codec through real processes: the shipped RB8 model (its context model fitted on the digits'
training split), a device sending entropy-coded frames, an edge decoding them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch

from bench.e2e import synthetic_png
from device.app import create_app
from device.settings import DeviceSettings
from sbn.up import stop_all, wait_for_edge
from shared.checkpoint import default_checkpoint
from tests.stack import device_client, monolithic_logits, start_edge, upload

RB8 = default_checkpoint("spiking_resnet50", 8)


@pytest.fixture(scope="module")
def edge_address() -> Iterator[str]:
    edge = start_edge(RB8)
    try:
        wait_for_edge(edge.address, edge.process)
        yield edge.address
    finally:
        stop_all([edge.process])


@pytest.mark.parametrize("codec", ["entropy", "auto"])
def test_entropy_coded_frames_give_the_monolithic_logits_in_fewer_bytes(edge_address: str, codec: str) -> None:
    with device_client(RB8, edge_address, codec=codec) as client:
        answers = []
        for seed in range(8):
            image = synthetic_png(seed)
            response = client.post("/classify", params={"logits": "true"}, files=upload(image))
            assert response.status_code == 200, response.text
            body = response.json()
            torch.testing.assert_close(torch.tensor(body["logits"]), monolithic_logits(RB8, image), rtol=0, atol=1e-5)
            answers.append(body)
    if codec == "entropy":
        assert all(a["codec"] == "entropy" for a in answers)
    assert sum(a["transmitted_bytes"] for a in answers) < 8 * 128  # raw: 128 bytes each
    assert all(a["compression_ratio"] > 16 for a in answers if a["codec"] == "entropy")


def test_a_device_refuses_the_entropy_codec_without_a_fitted_model(calibrated_checkpoint: Callable[..., Path]) -> None:
    with pytest.raises(ValueError, match="fit-codec"):
        create_app(DeviceSettings(checkpoint=calibrated_checkpoint(8), codec="entropy"))


def test_a_lossy_channel_degrades_raw_spikes_and_refuses_damaged_entropy_payloads(edge_address: str) -> None:
    # every bit flipped: a raw frame arrives as the inverted spikes (and is answered), an entropy frame fails its
    # CRC at the edge (502 naming the corruption)
    with device_client(RB8, edge_address, codec="raw", channel="bsc:1") as client:
        assert client.post("/classify", files=upload(synthetic_png())).status_code == 200
    with device_client(RB8, edge_address, codec="entropy", channel="bsc:1") as client:
        response = client.post("/classify", files=upload(synthetic_png()))
    assert response.status_code == 502 and "corrupt entropy payload" in response.json()["detail"]
