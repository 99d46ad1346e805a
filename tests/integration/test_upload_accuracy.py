"""Digits made unlike the training images, through real ``sbn edge`` + ``sbn device`` processes.

bench/drawn_digits.py draws 600 digits (pen strokes and typed fonts, any size, place and polarity);
no training step ever reads them, and no training image is typed in their fonts. Goal (issue: real
handwriting): at least 95 % of them classified correctly through /classify by every shipped model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.drawn_digits import MissingFonts, make_set
from bench.upload_accuracy import measure
from spikebottlenet.shared.checkpoint_metadata import CheckpointInfo, embedded_models

pytestmark = pytest.mark.slow

GOAL = 95.0  # % correct

# Where the shipped models that miss the goal stand on this set (docs/models.md: 'What uploads get'). Each known
# shortfall is listed with its measured figure; the test fails if a model falls more than 5 points
# below that figure, and also if it meets the goal (then take it off this list).
MEASURED = {
    # the MNIST MobileNets, fine-tuned from a backbone at 88.9 % (4 pre-training epochs): 77-81 % on MNIST's test split
    "spiking_mobilenetv2/IRB3": 59.67,
    "spiking_mobilenetv2/IRB8": 74.67,
    "spiking_mobilenetv2/IRB17": 72.83,
}
REGRESSION_MARGIN = 5.0


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drawn-digits")
    try:
        manifest = make_set(folder)
    except MissingFonts as e:
        pytest.skip(f"the held-out set's fonts are not installed: {e}")
    assert len(manifest) >= 500
    return folder


def model_id(checkpoint: CheckpointInfo) -> str:
    return f"{checkpoint.config.backbone.arch}/{checkpoint.config.split_point.name}"


@pytest.mark.parametrize("checkpoint", embedded_models(), ids=model_id)
def test_a_shipped_model_classifies_the_held_out_digits(checkpoint: CheckpointInfo, heldout: Path) -> None:
    result = measure(checkpoint, heldout)
    accuracy = result["all"]["accuracy"]
    assert result["all"]["images"] == 600
    measured = MEASURED.get(model_id(checkpoint))
    if measured is not None:
        assert accuracy >= measured - REGRESSION_MARGIN, result
        assert accuracy < GOAL, f"{model_id(checkpoint)} now meets the goal ({accuracy} %): take it off MEASURED"
        pytest.xfail(
            f"{accuracy} % of the held-out digits, below the {GOAL} % goal (docs/models.md: 'What uploads get')"
        )
    assert accuracy >= GOAL, result
