"""The batching policy both halves share: which queued jobs run together, and when a run waits for more.

Each scenario is a queue of jobs (their image counts) plus jobs that arrive while a run waits; the runs expected
are worked out by hand from the rule (take jobs in order while their images fit; a first job larger than the limit
runs alone; wait only while the queue is empty and there is room). Both drivers, the thread's and the coroutine's,
must form the same runs from the same arrivals.
"""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from spikebottlenet.shared.batching import BatchPolicy, collect_async, collect_blocking


class Arrivals:
    """While a run waits, the next scripted group of jobs joins the queue (True), or none does (False: time is up)."""

    def __init__(self, queue: deque[int], groups: list[list[int]]) -> None:
        self.queue, self.groups, self.waits = queue, list(groups), []

    def __call__(self, timeout_s: float) -> bool:
        self.waits.append(timeout_s)
        if not self.groups:
            return False
        self.queue.extend(self.groups.pop(0))
        return True


def runs(
    policy: BatchPolicy, queued: list[int], arriving: list[list[int]], wait_s: float, driver: str
) -> tuple[list[list[int]], Arrivals]:
    """Every run formed until the queue is empty, each job being its own image count."""
    queue = deque(queued)
    arrivals = Arrivals(queue, arriving)
    formed = []
    while queue:
        if driver == "blocking":
            formed.append(collect_blocking(policy, queue, lambda job: job, wait_s, arrivals))
        else:

            async def arrival(timeout_s: float) -> bool:
                return arrivals(timeout_s)

            formed.append(asyncio.run(collect_async(policy, queue, lambda job: job, wait_s, arrival)))
    return formed, arrivals


@pytest.mark.parametrize("driver", ["blocking", "async"])
def test_jobs_run_in_order_while_their_images_fit(driver: str) -> None:
    # limit 8: 3+4 = 7 and 5 would make 12; 5 alone, 9 > 8 stops it; 9 is larger than the limit and runs alone;
    # 2+2+4 = 8 is full; 1 is left with room to spare and nothing queued
    formed, arrivals = runs(BatchPolicy(max_images=8), [3, 4, 5, 9, 2, 2, 4, 1], [[7]], 0.0, driver)
    assert formed == [[3, 4], [5], [9], [2, 2, 4], [1]]
    # with no time to wait, the empty queue ends the last run without waiting for the job that would arrive
    assert arrivals.waits == []


@pytest.mark.parametrize("driver", ["blocking", "async"])
def test_a_waiting_run_takes_what_arrives_until_it_is_full_or_the_time_is_up(driver: str) -> None:
    # [1] waits: 2 arrives (3 images), waits again: 3 and 4 arrive, 3 fits (6), 4 does not (10 > 8) and starts the
    # next run, which waits for arrivals that no longer come
    formed, arrivals = runs(BatchPolicy(max_images=8), [1], [[2], [3, 4]], 60.0, driver)
    assert formed == [[1, 2, 3], [4]]
    assert len(arrivals.waits) == 3 and all(0 < w <= 60.0 for w in arrivals.waits)


@pytest.mark.parametrize("driver", ["blocking", "async"])
def test_a_full_run_does_not_wait(driver: str) -> None:
    formed, arrivals = runs(BatchPolicy(max_images=4), [2, 2, 1], [[1]], 60.0, driver)
    # [2, 2] is full: no wait; [1] has room and the queue is empty: it waits once, 1 arrives (2), then waits again
    assert formed == [[2, 2], [1, 1]]
    assert len(arrivals.waits) == 2


def test_a_run_waits_only_after_a_run_of_several_jobs() -> None:
    policy = BatchPolicy(max_images=16, max_wait_s=0.002)
    assert [policy.wait_after(jobs) for jobs in (0, 1, 2, 16)] == [0.0, 0.0, 0.002, 0.002]


@pytest.mark.parametrize("fields", [{"max_images": 0}, {"max_wait_s": -1.0}])
def test_a_policy_that_could_never_run_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="max_images >= 1 and max_wait_s >= 0"):
        BatchPolicy(**fields)
