"""The queue in front of a head: concurrent uploads run through the head as one batch.

    request coroutines   submit(images, deadline) -> wait for their own frame, at most until the deadline
    one worker task      take the queued jobs, up to ``max_images`` images -> drop those whose request has
                         given up -> on the head thread: one head forward over all of their images (decoded
                         before they were queued: device/decoder.py), one frame per job (HeadRunner.run_jobs)
                         -> wake each request with its JobResult

A job is one request: ``POST /classify``'s one image, or ``POST /classify/batch``'s images, which keep
travelling to the edge in one frame of their own. Every request still gets its own frame and its own
energy; what the requests of a burst share is one forward through the head.

Bounds, so a burst costs neither memory nor time without limit: at most ``max_queued`` jobs wait,
counting the requests whose uploads are being decoded on their way here (``on_its_way``; one more is
refused at once: HeadQueueFull, 503 with Retry-After), and a job that cannot get through the head
before its request's deadline is answered 504 (HeadTimeout) without taking the head. Each head has its
own queue and its own count: a burst on one head refuses nobody on another.

Which jobs run together is the policy both halves share (shared/batching.py): an idle head runs a lone upload
at once, and only after a run that carried several jobs does the worker wait up to ``max_wait_s`` for more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic
from typing import TypeVar

from spikebottlenet.shared.batching import BatchPolicy, collect_async
from spikebottlenet.shared.errors import SpikeBottleNetError

from .deadline import Deadline
from .head_runner import HeadRunner, JobResult, ModelInput

log = logging.getLogger("sbn.device")
T = TypeVar("T")


class HeadQueueFull(SpikeBottleNetError):
    """The head's queue is full: the device is overloaded, retry later (503)."""


class HeadTimeout(SpikeBottleNetError):
    """The request's deadline passed before the head could run its images (504)."""


class HeadThread:
    """The one thread that runs the torch work of every head: their forwards take turns anyway (HeadRunner's lock),
    and off it the event loop stays free for HTTP and gRPC."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head")

    async def run(self, function: Callable[..., T], *args: object, deadline: Deadline | None = None) -> T:
        """``function(*args)`` on the head thread; with a ``deadline``, raises HeadTimeout if it passes first."""
        work = asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        if deadline is None:
            return await work
        try:
            return await asyncio.wait_for(work, deadline.remaining())
        except TimeoutError:
            raise HeadTimeout(f"the {deadline.budget_s:g} s deadline passed while the head ran") from None

    def close(self) -> None:
        self._executor.shutdown()


@dataclass(eq=False)
class Job:
    """One request's images waiting for the head."""

    images: dict[int, ModelInput]  # the request's readable images, by their index in the request
    deadline: Deadline
    done: asyncio.Future[JobResult]
    enqueued: float = field(default_factory=monotonic)


class HeadQueue:
    """The queue in front of one head, and the worker that runs its jobs (the module's docstring)."""

    def __init__(
        self,
        head: HeadRunner,
        thread: HeadThread,
        policy: BatchPolicy,
        max_queued: int,
        on_run: Callable[[int], None] = lambda images: None,
    ) -> None:
        """``thread`` runs the torch work; ``on_run(images)`` is told the size of every head run."""
        self.head = head
        self._thread = thread
        self.policy, self.max_queued = policy, max_queued
        self._on_run = on_run
        self._queue: deque[Job] = deque()
        self._on_their_way = 0  # requests decoding their uploads for this queue (on_its_way)
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="head-queue")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    @contextmanager
    def on_its_way(self) -> Iterator[None]:
        """While the block runs (a request decoding its upload for this head), the request counts against the
        queue's limit as if queued; raises HeadQueueFull at once if the queue is full counting those already on
        their way, so that no upload is decoded for a request that would be refused."""
        self._refuse_if_full(self._on_their_way)
        self._on_their_way += 1
        try:
            yield
        finally:
            self._on_their_way -= 1

    def _refuse_if_full(self, on_their_way: int) -> None:
        """Raises HeadQueueFull if the queue, and ``on_their_way`` more requests that will join it, fill it."""
        while self._queue and self._queue[0].done.done():  # given up at its deadline: room for a live one
            self._queue.popleft()
        waiting = len(self._queue) + on_their_way
        if waiting >= self.max_queued:
            raise HeadQueueFull(
                f"device is busy: {waiting} requests are waiting for the head (at most "
                f"{self.max_queued}, SBN_DEVICE_HEAD_QUEUE_LIMIT); retry later"
            )

    async def submit(self, images: dict[int, ModelInput], deadline: Deadline) -> JobResult:
        """The job's JobResult (``images``: at least one); raises HeadQueueFull at once when the queue is full,
        HeadTimeout at the deadline. Requests still decoding do not count here: each was admitted with a place of
        its own (on_its_way), and this one, admitted too, is not to lose its place to them."""
        self._refuse_if_full(0)
        job = Job(images, deadline, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._arrived.set()
        try:
            # shield: on timeout the job's future stays, and the worker sees it was given up (cancelled)
            return await asyncio.wait_for(asyncio.shield(job.done), deadline.remaining())
        except TimeoutError:
            raise HeadTimeout(
                f"the {deadline.budget_s:g} s deadline passed while the request waited for the "
                f"device's head ({len(self._queue)} requests queued)"
            ) from None
        finally:
            if not job.done.done():  # timed out, or the request itself was cancelled: the worker skips the job
                job.done.cancel()

    async def _work(self) -> None:
        jobs_in_last_run = 0
        while True:
            jobs = await self._next_run(self.policy.wait_after(jobs_in_last_run))
            jobs_in_last_run = len(jobs)
            live = [job for job in jobs if not job.done.done() and not job.deadline.expired()]
            if not live:
                continue
            started = monotonic()
            try:
                results = await self._thread.run(self.head.run_jobs, [job.images for job in live])
            except Exception as e:  # a bug in the head: these requests get 500, the device goes on
                log.exception("the head failed on a run of %d jobs", len(live))
                for job in live:
                    if not job.done.done():
                        job.done.set_exception(e)
                continue
            self._on_run(results[0].run_images)
            for job, result in zip(live, results, strict=True):
                if not job.done.done():  # else its request has given up at its deadline
                    job.done.set_result(dataclasses.replace(result, queue_ms=(started - job.enqueued) * 1e3))

    async def _next_run(self, wait_s: float) -> list[Job]:
        """The jobs of the next head run (the shared policy: at least one, up to ``max_images`` images)."""
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        return await collect_async(self.policy, self._queue, lambda job: len(job.images), wait_s, self._arrival)

    async def _arrival(self, timeout_s: float) -> bool:
        """Whether a job joins the queue within ``timeout_s``."""
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
