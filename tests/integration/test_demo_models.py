"""The embedded demo models served by ``sbn up``: real edge and device processes.

``sbn up --arch mobilenetv2`` serves the MobileNetV2 as its default model; a plain ``sbn up`` (``make up``)
serves every embedded model, so that the README's ``?split_point=K`` and ``arch=`` requests work on it.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from spikebottlenet.sbn.predict import MonolithicClassifier
from spikebottlenet.shared.backbones import resolve_arch
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.processes import free_port, stop, wait_for_http
from tests.stack import upload

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def digit_png(index: int) -> tuple[bytes, int]:
    """One of scikit-learn's handwritten digits as a 32x32 grayscale PNG, and its label."""
    digits = sklearn_datasets.load_digits()
    pixels = (digits.images[index] * 255 / 16).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue(), int(digits.target[index])


@contextmanager
def sbn_up(*flags: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``sbn up FLAGS`` on free ports, as a user runs it; yields the device's URL once it is ready."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "spikebottlenet", "up", *flags, "--port", str(port), "--edge-port", str(free_port())],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/readyz", process)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def mobilenet_up() -> Iterator[str]:
    with sbn_up("--arch", "mobilenetv2", "--split-point", "8") as url:
        yield url


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


@pytest.fixture(scope="module")
def default_up() -> Iterator[str]:
    """``sbn up`` with no model flags or variables, as a new user runs it (``make up PORT=...``)."""
    env = {
        name: value
        for name, value in os.environ.items()  # none of the variables that choose models
        if not re.fullmatch(r"SBN_(EDGE_|DEVICE_)?(ARCH|SPLIT_POINT|CHECKPOINT|MODELS)", name)
    }
    with sbn_up(env=env) as url:
        yield url


@pytest.mark.parametrize(
    "params, arch, split_point",
    [
        ({}, "spiking_resnet50", 8),  # the default model
        ({"split_point": "16"}, "spiking_resnet50", 16),  # the README's requests
        ({"arch": "spiking_mobilenetv2", "split_point": "8"}, "spiking_mobilenetv2", 8),
    ],
    ids=["default", "split_point=16", "arch=spiking_mobilenetv2&split_point=8"],
)
def test_a_default_sbn_up_answers_for_every_embedded_model(
    default_up: str, params: dict[str, str], arch: str, split_point: int
) -> None:
    reference = MonolithicClassifier(load_checkpoint(default_checkpoint(arch, split_point), "full"))
    image, _ = digit_png(1792)
    response = httpx.post(
        f"{default_up}/classify", params={**params, "logits": "true"}, files=upload(image), timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reference.classify(image)
    assert (body["arch"], body["split_point"]) == (arch, split_point)
    assert body["model"]["fingerprint"] == reference.checkpoint.fingerprint
    assert body["label"] == expected.label
    torch.testing.assert_close(torch.tensor(body["logits"]), torch.tensor(expected.logits), rtol=0, atol=1e-5)
