"""``uncertain`` on what is not a digit, through real ``sbn edge`` + device on the shipped default model."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.drawn_digits import draw_strokes
from spikebottlenet.sbn.predict import MonolithicClassifier
from spikebottlenet.shared.backbones import DEFAULT_ARCH
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import (
    CheckpointInfo,
    default_checkpoint,
    embedded_models,
    read_checkpoint_info,
)
from spikebottlenet.shared.processes import stop, wait_for_edge
from spikebottlenet.shared.settings import DEFAULT_SPLIT_POINT
from tests.stack import device_client, start_edge, upload

CHECKPOINT = default_checkpoint(DEFAULT_ARCH, DEFAULT_SPLIT_POINT)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def landscape() -> np.ndarray:
    """A photo-like picture: sky getting lighter towards the horizon, a sun, green ground."""
    yy, xx = np.mgrid[0:240, 0:320]
    image = np.zeros((240, 320, 3), np.uint8)
    image[..., 2] = 255 - yy // 2
    image[..., 1] = 150 - yy // 3
    image[160:] = (60, 120, 40)
    image[(yy - 60) ** 2 + (xx - 240) ** 2 < 900] = (255, 230, 80)
    return image


def colour_gradient() -> np.ndarray:
    """A smooth colour gradient, photo-like and without a single stroke: red left to right, green top to bottom."""
    red, green = np.meshgrid(np.linspace(40, 220, 256), np.linspace(0, 255, 192))
    return np.stack([red, green, np.full_like(red, 128.0)], -1).round().astype(np.uint8)


NOT_DIGITS = {
    "noise": np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8),
    "noise-1000px-gray": np.random.default_rng(1).integers(0, 256, (1000, 1000), dtype=np.uint8),
    "blank-white": np.full((200, 200), 255, np.uint8),
    "blank-black": np.zeros((64, 64), np.uint8),
    "one-pixel": np.full((1, 1, 3), 77, np.uint8),
    "photo-landscape": landscape(),
    "colour-gradient": colour_gradient(),
}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    assert read_checkpoint_info(CHECKPOINT).config.input_style in ("digits", "mnist")  # handwriting models
    edge = start_edge(CHECKPOINT)
    try:
        wait_for_edge(edge.address, edge.process)
        with device_client(CHECKPOINT, edge.address) as c:
            yield c
    finally:
        stop(edge.process)


@pytest.mark.parametrize("name", sorted(NOT_DIGITS))
def test_what_is_not_a_digit_is_answered_uncertain(client: httpx.Client, name: str) -> None:
    response = client.post("/classify", files=upload(png(NOT_DIGITS[name])))
    assert response.status_code == 200, response.text  # an answer, not an error and not a crash
    body = response.json()
    assert body["uncertain"] is True, body
    assert 0 <= body["uncertainty_score"] <= 1
    # a flat picture, or one shaded with no stroke in it, has nothing to name: no label, rather than one at some
    # probability
    blank = bool(NOT_DIGITS[name].min() == NOT_DIGITS[name].max()) or name == "colour-gradient"
    assert body["blank"] is blank
    if blank:
        assert body["label"] is None and body["class_index"] is None and body["probability"] is None
        assert body["top5"] == []
    else:
        assert body["label"] == body["top5"][0]["label"]


def test_clear_drawn_digits_are_mostly_answered_with_confidence(client: httpx.Client) -> None:
    rng = np.random.default_rng(123)
    bodies = [
        client.post("/classify", files=upload(png(np.asarray(draw_strokes(d % 10, rng))))).json() for d in range(20)
    ]
    assert sum(b["uncertain"] for b in bodies) <= 5
    assert sum(b["label"] == str(d % 10) for d, b in enumerate(bodies)) >= 16


HANDWRITING_MODELS = [c for c in embedded_models() if c.config.input_style in ("digits", "mnist")]


@pytest.mark.parametrize("checkpoint", HANDWRITING_MODELS, ids=lambda c: c.path.stem)
def test_every_handwriting_model_answers_noise_blank_and_shading_uncertain(checkpoint: CheckpointInfo) -> None:
    # in-process, through the same head, tail and answer as the services (sbn predict's path)
    classifier = MonolithicClassifier(load_checkpoint(checkpoint.path, "full"))
    # a photo becomes a filled blob once framed (a landscape's sun: a disk 10 erosions deep), which only an MNIST
    # model's stroke-depth rule flags: a digits model's training scans, 8x8 upscaled, are blobs themselves
    names = ["noise", "noise-1000px-gray", "blank-white", "blank-black", "colour-gradient"]
    if checkpoint.config.input_style == "mnist":
        names.append("photo-landscape")
    for name in names:
        answer = classifier.classify(png(NOT_DIGITS[name]))
        assert answer.uncertain, (name, answer.label, answer.uncertainty_score)
