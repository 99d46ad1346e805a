"""Micro-batching: which queued jobs run together, and how long a run waits for more. Both halves batch this way,
the device's head (device/head_queue.py, asyncio) and the edge's tail (edge/micro_batcher.py, a thread); each is
an adapter that owns its queue and its way of waiting, and asks ``collect`` what to run next.

    an idle half        runs a lone job at once, so batching adds nothing to the latency of one request at a time
    under load          (the last run carried several jobs) waits up to ``max_wait_s`` for more to join the next
                        run, which gathers the jobs of a burst that arrive a little apart into one run
    a run               takes jobs from the front of the queue, in order, while their images fit in
                        ``max_images``; a first job larger than that runs alone

``BatchPolicy.collect`` does no waiting itself: it is a generator that yields how long it would wait for another
job and is sent whether one arrived, so the same few lines serve both halves. ``collect_blocking`` drives it with a
thread's wait (a ``threading.Condition``), ``collect_async`` with a coroutine's (an ``asyncio.Event``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from time import monotonic
from typing import TypeVar

J = TypeVar("J")


@dataclass(frozen=True)
class BatchPolicy:
    max_images: int = 16  # a run stops growing here; a single job with more images still runs, alone
    max_wait_s: float = 0.002  # under load, how long a run waits for more jobs to join it

    def __post_init__(self) -> None:
        if self.max_images < 1 or self.max_wait_s < 0:
            raise ValueError(f"a batch policy needs max_images >= 1 and max_wait_s >= 0, got {self}")

    def wait_after(self, jobs_in_last_run: int) -> float:
        """How long the next run may wait for jobs: 0 while idle, ``max_wait_s`` after a run of several jobs."""
        return self.max_wait_s if jobs_in_last_run > 1 else 0.0

    def collect(self, queue: deque[J], images: Callable[[J], int], wait_s: float) -> Generator[float, bool, list[J]]:
        """The jobs of the next run, taken from the front of ``queue``, which must not be empty: the first job,
        then each next one while its images fit. While the queue is empty and there is room, it yields the seconds
        left of ``wait_s`` and is sent whether a job arrived meanwhile (False: stop waiting); it returns the run.
        """
        run = [queue.popleft()]
        taken = images(run[0])
        until = monotonic() + wait_s
        while taken < self.max_images:
            if not queue:
                remaining = until - monotonic()
                if remaining <= 0 or not (yield remaining) or not queue:
                    break
                continue
            if taken + images(queue[0]) > self.max_images:
                break  # it runs first in the next run
            run.append(job := queue.popleft())
            taken += images(job)
        return run


def collect_blocking(
    policy: BatchPolicy, queue: deque[J], images: Callable[[J], int], wait_s: float, arrival: Callable[[float], bool]
) -> list[J]:
    """``policy.collect`` with ``arrival(timeout_s)``: blocks until a job arrives (True) or the time is up (False)."""
    collecting = policy.collect(queue, images, wait_s)
    try:
        remaining = next(collecting)
        while True:
            remaining = collecting.send(arrival(remaining))
    except StopIteration as done:
        return done.value


async def collect_async(
    policy: BatchPolicy,
    queue: deque[J],
    images: Callable[[J], int],
    wait_s: float,
    arrival: Callable[[float], Awaitable[bool]],
) -> list[J]:
    """``policy.collect`` with ``await arrival(timeout_s)``: True once a job arrives, False when the time is up."""
    collecting = policy.collect(queue, images, wait_s)
    try:
        remaining = next(collecting)
        while True:
            remaining = collecting.send(await arrival(remaining))
    except StopIteration as done:
        return done.value
