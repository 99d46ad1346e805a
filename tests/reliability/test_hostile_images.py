"""Hostile uploads through a device in front of a real edge: each gets a 4xx naming the problem or the
monolithic model's answer, never a 500; then a bounded mutation fuzz of the image decoding."""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import ImageError, load_image
from tests.shared.test_preprocess import encoded, png_claiming, png_rgb16
from tests.stack import EdgeProcess, device_client, monolithic_logits, upload

from .fuzz import mutate

NOISE = Image.fromarray(np.random.default_rng(7).integers(0, 256, (48, 40, 3), dtype=np.uint8))
PNG, JPEG = encoded(NOISE, "PNG"), encoded(NOISE, "JPEG")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) declares width x height pixels."""
    data = bytearray(JPEG)
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), then height and width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif(*colours: tuple[int, int, int]) -> bytes:
    first, *rest = (Image.new("RGB", (24, 24), colour) for colour in colours)
    return encoded(first, "GIF", save_all=True, append_images=rest)


# name: (data, content type, status, words the detail must contain)
REFUSED = {
    "zero bytes": (b"", "image/png", 400, ["empty"]),
    "truncated PNG": (PNG[: len(PNG) // 2], "image/png", 400, ["cannot decode", "truncated"]),
    "truncated JPEG": (JPEG[: len(JPEG) // 2], "image/jpeg", 400, ["cannot decode", "truncated"]),
    "JPEG cut inside its header": (JPEG[:20], "image/jpeg", 400, ["not an image"]),
    "PNG bomb, 100,000 x 100,000 in 80 bytes": (
        png_claiming(100_000, 100_000),
        "image/png",
        413,
        ["decompression bomb", "at most 67,108,864 decoded bytes"],
    ),
    "PNG claiming 8,000 x 8,000": (
        png_claiming(8_000, 8_000),
        "image/png",
        413,
        ["8000x8000 pixels", "at most 67,108,864 decoded bytes"],
    ),
    "JPEG bomb, 65,000 x 65,000": (jpeg_claiming(65_000, 65_000), "image/jpeg", 413, ["decompression bomb"]),
    "text sent as image/png": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "image/png", 400, ["not an image"]),
    "HTML sent as image/jpeg": (b"<html><img src=x onerror=alert(1)></html>", "image/jpeg", 400, ["not an image"]),
}
ANSWERED = {
    "1x1 PNG": encoded(Image.new("RGB", (1, 1), (200, 30, 90))),
    "multi-frame GIF": gif((255, 0, 0), (0, 255, 0), (0, 0, 255)),
    "16-bit grayscale PNG": encoded(Image.new("I;16", (20, 20), 40_000)),
    "16-bit RGB PNG": png_rgb16((60_000, 20_000, 5_000)),
    "CMYK JPEG": encoded(Image.new("CMYK", (24, 24), (10, 200, 30, 5)), "JPEG"),
}


@pytest.fixture(scope="module")
def client(checkpoint: Path, edge: EdgeProcess) -> Iterator[httpx.Client]:
    with device_client(checkpoint, edge.address) as client:
        yield client


@pytest.mark.parametrize("data, content_type, status, words", REFUSED.values(), ids=REFUSED.keys())
def test_a_hostile_image_is_refused_with_a_message(
    client: httpx.Client, data: bytes, content_type: str, status: int, words: list[str]
) -> None:
    response = client.post("/classify", files=upload(data, "upload", content_type))
    assert response.status_code == status
    for word in words:
        assert word in response.json()["detail"]


@pytest.mark.parametrize("data", ANSWERED.values(), ids=ANSWERED.keys())
def test_an_odd_but_valid_image_gets_the_monolithic_answer(client: httpx.Client, checkpoint: Path, data: bytes) -> None:
    response = client.post("/classify", params={"logits": "true"}, files=upload(data, "upload", "image/png"))
    assert response.status_code == 200, response.text
    torch.testing.assert_close(
        torch.tensor(response.json()["logits"]), monolithic_logits(checkpoint, data), rtol=0, atol=1e-5
    )


SEEDS = [
    encoded(NOISE.resize((24, 24)), fmt, **params)
    for fmt, params in (
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("WEBP", {}),
        ("PPM", {}),
    )
]


def mutants(seed: int, count: int) -> Iterator[bytes]:
    """``count`` valid images of every supported format, mutated."""
    rng = random.Random(seed)
    for _ in range(count):
        yield mutate(rng, rng.choice(SEEDS))


# Pillow warns about what it skips in a damaged file (a TIFF tag past the end, ...): expected here.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_images_decode_or_are_refused_and_nothing_else(report: Callable[[str], None]) -> None:
    config = ModelConfig()
    outcomes: Counter[str] = Counter()
    for data in mutants(seed=0, count=3000):
        try:
            assert load_image(data, config).shape == (3, 32, 32)
            outcomes["decoded"] += 1
        except ImageError:
            outcomes["refused"] += 1
    report(
        f"hostile images, in-process: 3000 mutated PNG/JPEG/GIF/BMP/TIFF/WebP/PPM files: "
        f"{outcomes['decoded']} decoded, {outcomes['refused']} refused with ImageError, 0 other exceptions"
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_uploads_get_200_400_or_413_and_the_device_goes_on(
    client: httpx.Client, report: Callable[[str], None]
) -> None:
    # 413: a mutated header declaring more pixels than the decoded-size budget
    statuses = Counter(client.post("/classify", files=upload(data)).status_code for data in mutants(seed=1, count=100))
    assert set(statuses) <= {200, 400, 413}, statuses
    assert client.post("/classify", files=upload(synthetic_png())).status_code == 200
    report(
        f"hostile images, over HTTP: {len(REFUSED)} named hostile uploads refused with a 4xx and a message, "
        f"{len(ANSWERED)} odd but valid ones answered like the monolithic model, 100 mutated uploads: "
        f"{statuses[200]} x 200, {statuses[400]} x 400, {statuses[413]} x 413, no 500"
    )
