"""An RB8 tail (batches up to 2) and a valid frame for it, from the calibrated test checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.e2e import synthetic_png
from device.head_runner import HeadRunner
from edge.tail_runner import TailRunner
from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb


@pytest.fixture(scope="module")
def checkpoint(calibrated_checkpoint: Callable[..., Path]) -> Path:
    return calibrated_checkpoint(8)


@pytest.fixture(scope="module")
def runner(checkpoint: Path) -> TailRunner:
    return TailRunner.load(checkpoint, max_batch=2)


@pytest.fixture(scope="module")
def frame(checkpoint: Path) -> pb.SpikeFrame:
    """The frame the device sends for ``synthetic_png()``."""
    return HeadRunner.load(checkpoint).run(synthetic_png()).frame

