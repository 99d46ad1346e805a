"""A tail that holds every batch until the test releases it: frames pile up behind it on purpose."""

from __future__ import annotations

import threading

import torch

from spikebottlenet.edge.tail_runner import TailRunner


class BlockingRunner(TailRunner):
    """``entered`` is released once per batch that reaches the tail; ``release`` lets every batch through.

    Also records what ran: the batch size of every tail call, and the most calls ever inside at once.
    """

    def __init__(self, runner: TailRunner) -> None:
        super().__init__(runner.tail, runner.checkpoint, runner.max_batch)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.batch_sizes: list[int] = []
        self.most_at_once = 0
        self._inside = 0
        self._lock = threading.Lock()

    def infer(self, spikes: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self._inside += 1
            self.most_at_once = max(self.most_at_once, self._inside)
            self.batch_sizes.append(spikes.shape[1])
        self.entered.release()
        try:
            self.release.wait(timeout=30)
            return super().infer(spikes)
        finally:
            with self._lock:
                self._inside -= 1
