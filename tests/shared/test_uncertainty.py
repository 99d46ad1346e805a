"""The "uncertain" rule: a calibration that flags at most 2 % of validation images, blank inputs always."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spikebottlenet.shared.uncertainty import (
    FLAG_FRACTION,
    Calibration,
    InputTraits,
    calibrate,
    ink,
    is_blank,
    is_uncertain,
    max_softmax,
    stroke_depth,
)


def drawn(blank: bool = False, ink: float = 0.3, stroke_depth: int = 2) -> InputTraits:
    return InputTraits(blank, ink, stroke_depth)


def test_max_softmax_by_hand() -> None:
    logits = np.array([[0.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    # softmax of (0, 0) is (1/2, 1/2); of (2, 0) it is e^2 / (e^2 + 1)
    expected = np.array([0.5, np.e**2 / (np.e**2 + 1)])
    assert max_softmax(logits).dtype == np.float32
    assert np.allclose(max_softmax(logits), expected)


def test_fifty_scores_flag_exactly_the_lowest_one() -> None:
    scores = np.linspace(0.1, 1.0, 50, dtype=np.float32)  # 2 % of 50 is one image
    c = calibrate(scores)
    assert c.threshold == scores[1].item() and c.flagged_fraction == 1 / 50 and c.calibration_images == 50


@given(st.lists(st.floats(0.125, 1.0, width=32), min_size=1, max_size=400))
def test_never_more_than_the_flag_fraction_of_the_scores_is_flagged(values: list[float]) -> None:
    scores = np.array(values, dtype=np.float32)
    c = calibrate(scores)
    flagged = sum(v < c.threshold for v in values)  # counted in Python, not by the module
    assert flagged <= FLAG_FRACTION * len(values)
    assert c.flagged_fraction == flagged / len(values)


def test_blank_inputs_are_always_uncertain_and_weak_ones_below_the_threshold() -> None:
    x = np.zeros((4, 3, 4, 4), dtype=np.float32)
    x[1, 0, 2, 2] = 1.0  # one lit pixel
    x[2] += 0.7  # flat, but not zero
    x[3] += np.array([0.2, -1.5, 0.9]).reshape(3, 1, 1)  # a flat colour, each channel normalized its own way
    assert is_blank(x).tolist() == [True, False, True, True]
    c = Calibration(threshold=0.6, flagged_fraction=0.05, calibration_images=100)
    assert is_uncertain(0.99, drawn(blank=True, ink=0.0), c)
    assert is_uncertain(0.59, drawn(), c)
    assert not is_uncertain(0.6, drawn(), c)
    assert not is_uncertain(0.6, drawn(ink=0.99, stroke_depth=12), c)  # natural style: no ink or stroke rule
    assert not is_uncertain(0.1, drawn(), calibration=None)  # uncalibrated: only blank inputs


def test_more_ink_than_any_training_image_is_uncertain_for_a_digits_model() -> None:
    train_ink = ink(np.array([[[[0.0, 1.0], [0.0, 0.0]]], [[[1.0, 1.0], [0.0, 0.0]]]], dtype=np.float32))  # 1/4, 1/2
    assert train_ink.tolist() == [0.25, 0.5]
    c = calibrate(np.linspace(0.1, 1.0, 20), train_ink=train_ink)
    assert c.max_ink == 0.5
    assert not is_uncertain(0.99, drawn(ink=0.5), c)
    assert is_uncertain(0.99, drawn(ink=0.51), c)


def test_stroke_depth_by_hand() -> None:
    images = np.zeros((4, 3, 12, 12), dtype=np.float32)
    images[1, :, 5, 1:11] = 1.0  # a one-pixel line: gone after one erosion
    images[2, :, 2:10, 2:10] = 1.0  # an 8x8 square: its centre 2x2 is 4 steps from the background
    images[3, :, 0:7, 0:12] = 0.9  # a band across the top 7 rows; outside the image counts as background
    images[3, :, 3, 6] = 0.4  # below the ink threshold: a hole
    assert stroke_depth(images).tolist() == [0, 1, 4, 3]


def city_block_depth(ink: np.ndarray) -> int:
    """The same quantity written directly: the largest, over ink pixels, of the city-block distance to the
    nearest background pixel, counting a ring of background around the image."""
    padded = np.pad(ink, 1)
    background = np.argwhere(~padded)
    return max((int(np.abs(background - p).sum(axis=1).min()) for p in np.argwhere(padded)), default=0)


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 14), st.integers(1, 14))))
def test_stroke_depth_is_the_largest_city_block_distance_to_the_background(ink: np.ndarray) -> None:
    pixels = ink.astype(np.float32)[None, None]
    assert stroke_depth(pixels).item() == city_block_depth(ink)


def test_strokes_deeper_than_any_training_digits_are_uncertain_for_an_mnist_model() -> None:
    square = np.zeros((2, 1, 12, 12), dtype=np.float32)
    square[0, :, 1:5, 1:5] = 1.0  # depth 2
    square[1, :, 1:7, 1:7] = 1.0  # depth 3
    c = calibrate(np.linspace(0.1, 1.0, 20), train_stroke_depth=stroke_depth(square))
    assert c.max_stroke_depth == 3
    assert not is_uncertain(0.99, drawn(stroke_depth=3), c)
    assert is_uncertain(0.99, drawn(stroke_depth=4), c)


def test_a_calibration_without_a_stroke_depth_is_written_back_without_the_key() -> None:
    stored = {
        "threshold": 0.7,
        "flagged_fraction": 0.01,
        "calibration_images": 10000,
        "score": "max_softmax",
        "max_ink": 0.5,
    }
    assert Calibration.from_dict(stored).to_dict() == stored
    assert Calibration.from_dict({**stored, "max_stroke_depth": 8}).to_dict() == {**stored, "max_stroke_depth": 8}


def test_a_calibration_stored_under_the_digits_era_names_loads_and_is_written_back_under_them() -> None:
    stored = {
        "threshold": 0.7,
        "flagged_test_fraction": 0.05,
        "test_images": 360,
        "score": "max_softmax",
        "max_ink": 0.64,
    }
    c = Calibration.from_dict(stored)
    assert (c.threshold, c.flagged_fraction, c.calibration_images, c.max_ink) == (0.7, 0.05, 360, 0.64)
    assert c.to_dict() == stored
    assert c == Calibration(0.7, 0.05, 360, max_ink=0.64)  # the names it was stored under are not its value
