""" "I don't know" is an answer: when a classification is flagged ``uncertain``.

Three rules, any one flags an image:

* **blank input**: each channel of the model input is one flat value (an empty canvas, a flat colour, a handwriting
  upload with no ink): there is nothing to classify, whatever the logits say.
* **weak prediction**: the maximum softmax probability (MSP, Hendrycks & Gimpel 2017) is below the
  model's threshold. The threshold is calibrated on the model's own validation split (the test split
  for a dataset without one), as the
  FLAG_FRACTION-quantile of its MSPs there, so that at most 2 % of in-distribution images are
  flagged (5 % for the digits-era models); it is stored in the checkpoint's info (``uncertainty``), which
  ``sbn train finetune`` fills in and ``sbn train calibrate`` (re)computes for an existing checkpoint.

* **not a drawing** (handwriting models only: input styles digits and mnist): the model input holds more ink than
  any training image did, re-drawn ones included (its mean brightness above ``max_ink``, also in the calibration).
  Random noise and photos become large blobs of "ink" once thresholded and framed (noise: 0.99, a landscape:
  0.81, against at most 0.64 in training), which a softmax can still be confident about.

A checkpoint without a calibration (an untrained placeholder) flags only blank inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

SCORE = "max_softmax"
FLAG_FRACTION = 0.02  # at most this share of the calibration split's images may be flagged (5 % before MNIST)


@dataclass(frozen=True)
class Calibration:
    threshold: float  # an image whose MSP is below this is flagged
    flagged_fraction: float  # the share of the calibration images it flags (<= FLAG_FRACTION)
    calibration_images: int  # the validation split's (the test split's, for a dataset without one)
    score: str = SCORE
    max_ink: float | None = None  # digits models: the most ink a training image had (mean brightness, 0..1)
    # read from a digits-era info, which names flagged_fraction and calibration_images after the test split it was
    # computed on: written back under those names, so that rewriting the info changes nothing else
    digits_era_names: bool = field(default=False, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        if not self.digits_era_names:
            return {
                "threshold": self.threshold,
                "flagged_fraction": self.flagged_fraction,
                "calibration_images": self.calibration_images,
                "score": self.score,
                "max_ink": self.max_ink,
            }
        stored = {
            "threshold": self.threshold,
            "flagged_test_fraction": self.flagged_fraction,
            "test_images": self.calibration_images,
            "score": self.score,
        }
        return stored if self.max_ink is None else {**stored, "max_ink": self.max_ink}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Calibration:
        digits_era = {"flagged_test_fraction": "flagged_fraction", "test_images": "calibration_images"}
        return cls(
            **{digits_era.get(k, k): v for k, v in stored.items()},
            digits_era_names=not digits_era.keys().isdisjoint(stored),
        )


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """[N, K] logits -> [N] maximum softmax probability."""
    return logits.float().softmax(dim=-1).amax(dim=-1)


def calibrate(
    scores: torch.Tensor, flag_fraction: float = FLAG_FRACTION, train_ink: torch.Tensor | None = None
) -> Calibration:
    """The highest threshold that flags at most ``flag_fraction`` of ``scores`` ([N] MSPs of the calibration
    images), and
    the most ink among ``train_ink`` ([M] ``ink`` of the training images) when given.

    With the scores sorted, flagging "score < s_(m)" flags at most m images (fewer on ties), so
    m = floor(fraction * N) and the threshold is the m-th smallest score (0-based).
    """
    scores = scores.float().sort().values
    m = int(flag_fraction * len(scores))
    threshold = float(scores[m])
    max_ink = None if train_ink is None else float(train_ink.max())
    return Calibration(threshold, int((scores < threshold).sum()) / len(scores), len(scores), max_ink=max_ink)


def is_blank(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] model inputs -> [N] bool: each channel one flat value (a flat colour, whatever each
    channel's normalization makes of it)."""
    flat = x.flatten(2)  # [N, C, H*W]
    return (flat.amax(dim=2) == flat.amin(dim=2)).all(dim=1)


def ink(pixels: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] model inputs on the 0..1 scale (normalization undone) -> [N] mean brightness:
    for a digits model, white ink on black, the share of the frame that is ink."""
    return pixels.flatten(1).mean(dim=1)


def is_uncertain(score: float, blank: bool, ink: float, calibration: Calibration | None) -> bool:
    if blank:
        return True
    if calibration is None:
        return False
    return score < calibration.threshold or (calibration.max_ink is not None and ink > calibration.max_ink)
