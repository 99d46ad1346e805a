"""The "uncertain" rule: a calibration that flags at most 2 % of validation images, blank inputs always."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from spikebottlenet.shared.uncertainty import (
    FLAG_FRACTION,
    Calibration,
    calibrate,
    ink,
    is_blank,
    is_uncertain,
    max_softmax,
)


def test_max_softmax_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    # softmax of (0, 0) is (1/2, 1/2); of (2, 0) it is e^2 / (e^2 + 1)
    expected = torch.tensor([0.5, torch.e**2 / (torch.e**2 + 1)])
    assert torch.allclose(max_softmax(logits), expected)


def test_fifty_scores_flag_exactly_the_lowest_one() -> None:
    scores = torch.linspace(0.1, 1.0, 50)  # 2 % of 50 is one image
    c = calibrate(scores)
    assert c.threshold == scores[1].item() and c.flagged_fraction == 1 / 50 and c.calibration_images == 50


@given(st.lists(st.floats(0.125, 1.0, width=32), min_size=1, max_size=400))
def test_never_more_than_the_flag_fraction_of_the_scores_is_flagged(values: list[float]) -> None:
    scores = torch.tensor(values)
    c = calibrate(scores)
    flagged = sum(v < c.threshold for v in values)  # counted in Python, not by the module
    assert flagged <= FLAG_FRACTION * len(values)
    assert c.flagged_fraction == flagged / len(values)


def test_blank_inputs_are_always_uncertain_and_weak_ones_below_the_threshold() -> None:
    x = torch.zeros(4, 3, 4, 4)
    x[1, 0, 2, 2] = 1.0  # one lit pixel
    x[2] += 0.7  # flat, but not zero
    x[3] += torch.tensor([0.2, -1.5, 0.9]).view(3, 1, 1)  # a flat colour, each channel normalized its own way
    assert is_blank(x).tolist() == [True, False, True, True]
    c = Calibration(threshold=0.6, flagged_fraction=0.05, calibration_images=100)
    assert is_uncertain(0.99, blank=True, ink=0.0, calibration=c)
    assert is_uncertain(0.59, blank=False, ink=0.3, calibration=c)
    assert not is_uncertain(0.6, blank=False, ink=0.3, calibration=c)
    assert not is_uncertain(0.6, blank=False, ink=0.99, calibration=c)  # natural style: no ink rule
    assert not is_uncertain(0.1, blank=False, ink=0.3, calibration=None)  # uncalibrated: only blank inputs


def test_more_ink_than_any_training_image_is_uncertain_for_a_digits_model() -> None:
    train_ink = ink(torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]], [[[1.0, 1.0], [0.0, 0.0]]]]))  # 1/4 and 1/2
    assert train_ink.tolist() == [0.25, 0.5]
    c = calibrate(torch.linspace(0.1, 1.0, 20), train_ink=train_ink)
    assert c.max_ink == 0.5
    assert not is_uncertain(0.99, blank=False, ink=0.5, calibration=c)
    assert is_uncertain(0.99, blank=False, ink=0.51, calibration=c)


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
