"""Reliability and security tests: real edge and device processes on 127.0.0.1, faults, load, hostile input.

Each test records its figures (requests held, faults survived, inputs tried, latencies, memory) with
the ``report`` fixture; they are printed as the test runs (visible with ``pytest -s``) and again,
all together, in a "reliability figures" section at the end of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spikebottlenet.shared.processes import stop_all, wait_for_edge
from tests.stack import EdgeProcess, start_edge

FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``report("what happened, in figures")``."""
    lines = request.config.stash.setdefault(FIGURES, [])

    def add(line: str) -> None:
        print(f"\n[reliability] {line}")
        lines.append(line)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def checkpoint(calibrated_checkpoint: Callable[..., Path]) -> Path:
    """The RB8 model most of these tests serve."""
    return calibrated_checkpoint(8)


@pytest.fixture(scope="session")
def edge(checkpoint: Path) -> Iterator[EdgeProcess]:
    """A plaintext edge process serving ``checkpoint``, shared by the tests that leave it running."""
    edge = start_edge(checkpoint)
    try:
        wait_for_edge(edge.address, edge.process)
        yield edge
    finally:
        stop_all([edge.process])
