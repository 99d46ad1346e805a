"""Edges as real processes (``python -m sbn edge``), one per tested split point, shared by the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sbn.up import stop_all, wait_for_edge
from tests.stack import EdgeProcess, start_edge

SPLIT_POINTS = (1, 8, 16)  # the first, a middle and the last split point


@pytest.fixture(scope="session")
def edges(calibrated_checkpoint: Callable[..., Path]) -> Iterator[dict[int, EdgeProcess]]:
    """{split point: edge}; started together so their startups overlap, each waited on via gRPC health."""
    started = {k: start_edge(calibrated_checkpoint(k)) for k in SPLIT_POINTS}
    try:
        for edge in started.values():
            wait_for_edge(edge.address, edge.process)
        yield started
    finally:
        stop_all([edge.process for edge in started.values()])
