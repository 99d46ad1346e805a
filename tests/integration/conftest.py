"""Edges as real processes (``python -m spikebottlenet edge``), one per tested split point, shared by the session.

``edges`` serve calibrated Spike ResNet50 checkpoints (keyed by split point, as most tests need one
ResNet edge); ``mobilenet_edges`` the spiking MobileNetV2's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spikebottlenet.shared.processes import stop_all, wait_for_edge
from tests.stack import EdgeProcess, start_edge

SPLIT_POINTS = (1, 8, 16)  # the first, a middle and the last split point of the ResNet50
MOBILENET_SPLIT_POINTS = (1, 8, 17)  # ... and of the MobileNetV2


def _start_edges(checkpoints: dict[int, Path]) -> Iterator[dict[int, EdgeProcess]]:
    """{split point: edge}; started together so their startups overlap, each waited on via gRPC health."""
    started = {k: start_edge(path) for k, path in checkpoints.items()}
    try:
        for edge in started.values():
            wait_for_edge(edge.address, edge.process)
        yield started
    finally:
        stop_all([edge.process for edge in started.values()])


@pytest.fixture(scope="session")
def edges(calibrated_checkpoint: Callable[..., Path]) -> Iterator[dict[int, EdgeProcess]]:
    yield from _start_edges({k: calibrated_checkpoint(k) for k in SPLIT_POINTS})


@pytest.fixture(scope="session")
def mobilenet_edges(calibrated_checkpoint: Callable[..., Path]) -> Iterator[dict[int, EdgeProcess]]:
    yield from _start_edges({k: calibrated_checkpoint(k, arch="spiking_mobilenetv2") for k in MOBILENET_SPLIT_POINTS})
