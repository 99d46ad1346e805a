"""The embedded MobileNetV2 demo model served by ``sbn up --arch mobilenetv2``: real edge and device processes."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from spikebottlenet.sbn.predict import MonolithicClassifier
from spikebottlenet.shared.processes import free_port, stop, wait_for_http
from spikebottlenet.shared.backbones import resolve_arch
from spikebottlenet.shared.checkpoint import default_checkpoint, load_checkpoint
from tests.stack import upload

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def digit_png(index: int) -> tuple[bytes, int]:
    """One of scikit-learn's handwritten digits as a 32x32 grayscale PNG, and its label."""
    digits = sklearn_datasets.load_digits()
    pixels = (digits.images[index] * 255 / 16).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue(), int(digits.target[index])


@pytest.fixture(scope="module")
def mobilenet_up() -> Iterator[str]:
    """``sbn up --arch mobilenetv2 --split-point 8`` as a user runs it; yields the device's URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "spikebottlenet", "up", "--arch", "mobilenetv2", "--split-point", "8",
                                "--port", str(port), "--edge-port", str(free_port())])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/readyz", process)
        yield url
    finally:
        stop(process)


def test_mobilenet_demo_through_real_processes_matches_the_monolithic_model(mobilenet_up: str) -> None:
    reference = MonolithicClassifier(load_checkpoint(default_checkpoint(resolve_arch("mobilenetv2"), 8), "full"))
    ready = httpx.get(f"{mobilenet_up}/readyz", timeout=10).json()
    assert (ready["arch"], ready["split_point"], ready["split_point_name"]) == ("spiking_mobilenetv2", 8, "IRB8")
    assert ready["model_fingerprint"] == reference.checkpoint.fingerprint
    for index in (1792, 1793, 1794):
        image, _ = digit_png(index)
        response = httpx.post(f"{mobilenet_up}/classify", params={"logits": "true"}, files=upload(image), timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        expected = reference.classify(image)
        assert (body["arch"], body["split_point_name"]) == ("spiking_mobilenetv2", "IRB8")
        assert body["label"] == expected.label and body["model"]["trained"] is True
        torch.testing.assert_close(torch.tensor(body["logits"]), torch.tensor(expected.logits), rtol=0, atol=1e-5)
        t, c, h, w = body["spike_shape"]
        assert body["transmitted_bytes"] == -(-t * c * h * w // 8)
