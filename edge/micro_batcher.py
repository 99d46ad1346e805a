"""The edge's one inference worker: frames that arrive together run through their tail as one batch.

    gRPC calls     check and decode a frame -> submit() -> wait until its logits are ready, the caller
                   has gone, or its deadline has passed
    the worker     take the queued frames of one model, up to ``max_images`` images -> drop those whose
                   caller has gone or whose deadline has passed -> concatenate along B -> decoder + tail
                   once -> hand each frame its own rows of the logits

Each served model has its own queue (frames of different models cannot share a batch); the worker
serves the queue whose first frame has waited longest. One worker, running torch with the edge's
configured threads, does every tail of every model: a loaded edge runs as much torch work as it has
threads for, never one tail per gRPC thread or per model on top of each other.

Which frames run together is the policy both halves share (shared/batching.py): an idle edge runs a lone frame
at once, and only once a batch has carried more than one frame does the worker wait up to ``max_wait_s`` for
more before it runs the next.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic, perf_counter

import torch

from spikebottlenet.shared.batching import BatchPolicy, collect_blocking

from .metrics import EdgeMetrics
from .tail_runner import DecodedFrame, TailRunner

log = logging.getLogger("sbn.edge")


class WorkerStopped(RuntimeError):
    """A frame submitted after the inference worker was told to stop (the edge is shutting down)."""


@dataclass(eq=False)
class PendingFrame:
    """One frame between its gRPC call and the worker."""

    runner: TailRunner  # the model the frame is for
    decoded: DecodedFrame
    deadline: float | None  # time.monotonic() by which the caller needs the answer; None: it set no deadline
    notify: Callable[[], object]  # wakes the frame's call (thread-safe): called once, from the worker, by settle()
    withdrawn: threading.Event = field(default_factory=threading.Event)  # set by the call once it stops waiting
    settled: bool = False  # the worker is done with the frame: logits or error set, or the frame dropped
    enqueued: float = field(default_factory=monotonic)
    logits: torch.Tensor | None = None  # [B, num_classes]: this frame's rows of the batch's logits
    error: Exception | None = None  # the tail failed on the batch (a bug, not a bad frame: frames are checked)
    queue_ms: float = 0.0  # submit -> its batch started
    inference_ms: float = 0.0  # the batch's decoder + tail
    batch_images: int = 0  # images in the batch that carried it

    @property
    def images(self) -> int:
        return self.decoded.images

    def abandoned(self, now: float) -> bool:
        """Nobody will read this frame's answer: running it would only delay the frames behind it."""
        return self.withdrawn.is_set() or (self.deadline is not None and now >= self.deadline)

    def settle(self) -> None:
        self.settled = True
        self.notify()


class TailBatcher:
    """The queues in front of the tails and the worker thread that empties them; ``close()`` stops the worker."""

    def __init__(self, policy: BatchPolicy, metrics: EdgeMetrics) -> None:
        self.policy = policy
        self._metrics = metrics
        self._queues: dict[str, deque[PendingFrame]] = {}  # model fingerprint -> its frames, oldest first
        self._changed = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="edge-inference", daemon=True)
        self._worker.start()

    def submit(self, frame: PendingFrame) -> None:
        with self._changed:
            if self._closed:
                raise WorkerStopped("the edge's inference worker has stopped")
            self._queues.setdefault(frame.runner.fingerprint, deque()).append(frame)
            self._metrics.set_queued(self._queued())
            self._changed.notify()

    def _queued(self) -> int:
        return sum(map(len, self._queues.values()))

    def close(self) -> None:
        """Stop taking frames; the worker finishes its current batch and runs what is queued, then exits."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._worker.join()

    def _work(self) -> None:
        frames_in_last_batch = 0
        while (batch := self._next_batch(self.policy.wait_after(frames_in_last_batch))) is not None:
            frames_in_last_batch = len(batch)
            now = monotonic()
            live = [frame for frame in batch if not frame.abandoned(now)]
            for frame in batch:
                if frame not in live:  # its call has ended (CANCELLED) or ends now (DEADLINE_EXCEEDED)
                    frame.settle()
            if live:
                self._run(live)

    def _next_batch(self, wait_s: float) -> list[PendingFrame] | None:
        """The next frames to run, all of one model (the shared policy: at least one, up to ``max_images``
        images); None once closed and drained."""
        with self._changed:
            while not self._queued():
                if self._closed:
                    return None
                self._changed.wait()
            queue = min((q for q in self._queues.values() if q), key=lambda q: q[0].enqueued)
            # waits on the condition (releasing it) for frames of this model; a close stops the wait
            batch = collect_blocking(
                self.policy,
                queue,
                lambda frame: frame.images,
                wait_s,
                lambda timeout_s: not self._closed and self._changed.wait(timeout_s),
            )
            self._metrics.set_queued(self._queued())
            return batch

    def _run(self, batch: list[PendingFrame]) -> None:
        try:
            self._run_batch(batch)
        except Exception as e:  # a bug outside the tail itself: these callers get INTERNAL, the worker goes on
            log.exception("the inference worker failed on a batch of %d frames", len(batch))
            for frame in batch:
                if not frame.settled:
                    frame.error = e
                    frame.settle()

    def _run_batch(self, batch: list[PendingFrame]) -> None:
        started = monotonic()
        sizes = [frame.images for frame in batch]
        runner = batch[0].runner
        start = perf_counter()
        rows: Sequence[torch.Tensor | None]  # None for every frame of a batch the tail failed on
        error: Exception | None
        try:
            # every frame of a batch is checked against the same spike shape
            rows = runner.infer_together([frame.decoded.spikes for frame in batch])  # [B_i, num_classes] each
        except Exception as e:  # a bug in the tail: every caller of this batch gets INTERNAL, the edge goes on
            log.exception("the tail failed on a batch of %d frames", len(batch))
            rows, error = [None] * len(batch), e
        else:
            error = None
        inference_ms = (perf_counter() - start) * 1e3
        self._metrics.ran_batch(runner.fingerprint, len(batch), sum(sizes), inference_ms / 1e3)
        for frame, logits in zip(batch, rows, strict=True):
            frame.logits, frame.error = logits, error
            frame.queue_ms = (started - frame.enqueued) * 1e3
            frame.inference_ms, frame.batch_images = inference_ms, sum(sizes)
            self._metrics.waited(runner.fingerprint, started - frame.enqueued)
            frame.settle()
