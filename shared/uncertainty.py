""" "I don't know" is an answer: when a classification is flagged ``uncertain``.

Four rules, any one flags an image:

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
* **a blob, not strokes** (mnist input style): the ink is thicker than any training digit's
  (``stroke_depth`` above ``max_stroke_depth``). MNIST frames every digit to a 20 px box, so a photo's
  bright patch or a noise field becomes a filled disk or square 10 erosions deep, where the boldest of
  MNIST's 50,000 training digits is 8 and a drawn upload 2-3. The re-drawn training images are left
  out of this maximum: the upload augmentation's boldest zeros are filled disks that no hand drew.

A checkpoint without a calibration (an untrained placeholder) flags only blank inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .preprocess import INK_THRESHOLD, unnormalize

if TYPE_CHECKING:
    from .model_config import ModelConfig

SCORE = "max_softmax"
FLAG_FRACTION = 0.02  # at most this share of the calibration split's images may be flagged (5 % before MNIST)


@dataclass(frozen=True)
class Calibration:
    threshold: float  # an image whose MSP is below this is flagged
    flagged_fraction: float  # the share of the calibration images it flags (<= FLAG_FRACTION)
    calibration_images: int  # the validation split's (the test split's, for a dataset without one)
    score: str = SCORE
    max_ink: float | None = None  # digits models: the most ink a training image had (mean brightness, 0..1)
    max_stroke_depth: int | None = None  # mnist models: the deepest stroke of a training digit (stroke_depth)
    # read from a digits-era info, which names flagged_fraction and calibration_images after the test split it was
    # computed on: written back under those names, so that rewriting the info changes nothing else
    digits_era_names: bool = field(default=False, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        if not self.digits_era_names:
            written = {
                "threshold": self.threshold,
                "flagged_fraction": self.flagged_fraction,
                "calibration_images": self.calibration_images,
                "score": self.score,
                "max_ink": self.max_ink,
            }
            # written only when set, so that an info calibrated before the rule round-trips unchanged
            return written if self.max_stroke_depth is None else {**written, "max_stroke_depth": self.max_stroke_depth}
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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Logits [..., K] -> float32 probabilities [..., K] (shifted by their maximum first: no overflow)."""
    logits = logits.astype(np.float32)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """Logits [..., K] -> float32 [...] maximum softmax probability."""
    return softmax(logits).max(axis=-1)


def calibrate(
    scores: np.ndarray,
    flag_fraction: float = FLAG_FRACTION,
    train_ink: np.ndarray | None = None,
    train_stroke_depth: np.ndarray | None = None,
) -> Calibration:
    """The highest threshold that flags at most ``flag_fraction`` of ``scores`` ([N] MSPs of the calibration
    images), the most ink among ``train_ink`` ([M] ``ink`` of the training images) and the deepest stroke among
    ``train_stroke_depth`` ([M'] ``stroke_depth`` of the training images), each when given.

    With the scores sorted, flagging "score < s_(m)" flags at most m images (fewer on ties), so
    m = floor(fraction * N) and the threshold is the m-th smallest score (0-based).
    """
    scores = np.sort(scores.astype(np.float32))
    m = int(flag_fraction * len(scores))
    threshold = float(scores[m])
    max_ink = None if train_ink is None else float(train_ink.max())
    max_depth = None if train_stroke_depth is None else int(train_stroke_depth.max())
    flagged = int((scores < threshold).sum()) / len(scores)
    return Calibration(threshold, flagged, len(scores), max_ink=max_ink, max_stroke_depth=max_depth)


def is_blank(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] model inputs -> bool [N]: each channel one flat value (a flat colour, whatever each
    channel's normalization makes of it)."""
    flat = x.reshape(*x.shape[:2], -1)  # [N, C, H*W]
    return (flat.max(axis=2) == flat.min(axis=2)).all(axis=1)


def ink(pixels: np.ndarray) -> np.ndarray:
    """[N, C, H, W] model inputs on the 0..1 scale (normalization undone) -> [N] mean brightness:
    for a digits model, white ink on black, the share of the frame that is ink."""
    return pixels.reshape(len(pixels), -1).mean(axis=1)


def stroke_depth(pixels: np.ndarray) -> np.ndarray:
    """[N, C, H, W] model inputs on the 0..1 scale -> int64 [N] how many 4-neighbour erosions the ink of channel 0
    (> INK_THRESHOLD) survives: the largest city-block distance from an ink pixel to the background, about half
    the width of the thickest stroke, the radius of a filled disk."""
    remaining = pixels[:, 0] > INK_THRESHOLD  # [N, H, W]
    depth = np.zeros(len(pixels), dtype=np.int64)
    while remaining.any():
        depth += remaining.any(axis=(1, 2))
        # erosion by the 4-neighbour cross: a pixel stays ink if it and its row and column neighbours are ink;
        # outside the image is background
        padded = np.pad(remaining, ((0, 0), (1, 1), (1, 1)))  # [N, H + 2, W + 2]
        remaining = remaining & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return depth


@dataclass(frozen=True)
class InputTraits:
    """What the rules read from one model input, beside the logits."""

    blank: bool  # each channel one flat value: nothing to classify (is_blank)
    ink: float  # mean brightness, 0..1 (ink)
    stroke_depth: int  # (stroke_depth)

    @classmethod
    def of(cls, x: np.ndarray, config: ModelConfig) -> list[InputTraits]:
        """Normalized model inputs float32 [N, C, H, W] -> each one's traits."""
        pixels = unnormalize(x, config)
        return [
            cls(*traits)
            for traits in zip(is_blank(x).tolist(), ink(pixels).tolist(), stroke_depth(pixels).tolist(), strict=True)
        ]


def is_uncertain(score: float, traits: InputTraits, calibration: Calibration | None) -> bool:
    if traits.blank:
        return True
    if calibration is None:
        return False
    too_much_ink = calibration.max_ink is not None and traits.ink > calibration.max_ink
    too_deep = calibration.max_stroke_depth is not None and traits.stroke_depth > calibration.max_stroke_depth
    return score < calibration.threshold or too_much_ink or too_deep
