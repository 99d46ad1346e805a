"""Micro-batching on the edge, in-process over real gRPC: frames that arrive together run as one tail batch,
each caller gets its own rows, one tail runs at a time, and frames whose caller is gone never run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import torch

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.edge.metrics import EdgeMetrics
from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.batching import BatchPolicy
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.edge.blocking_runner import BlockingRunner
from tests.stack import monolithic_logits

SEEDS = range(1, 7)


@pytest.fixture(scope="module")
def frames(checkpoint: Path) -> list[pb.SpikeFrame]:
    """The device's frame for each of six images, one image each."""
    head = HeadRunner.load(checkpoint)
    return [head.run(synthetic_png(seed)).frame for seed in SEEDS]


class WatchedMetrics(EdgeMetrics):
    """Edge metrics that also let the test wait, without polling, for a refusal to be counted or for the queue
    to reach a length."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals: dict[str, threading.Event] = {}
        self._queue_length = 0
        self._queue_changed = threading.Condition()

    def refused(self, fingerprint: str | None, code_name: str) -> None:
        super().refused(fingerprint, code_name)
        self.refusals.setdefault(code_name, threading.Event()).set()

    def wait_for_refusal(self, code_name: str, timeout: float = 10) -> bool:
        return self.refusals.setdefault(code_name, threading.Event()).wait(timeout)

    def set_queued(self, frames: int) -> None:
        super().set_queued(frames)
        with self._queue_changed:
            self._queue_length = frames
            self._queue_changed.notify_all()

    def wait_for_queued(self, frames: int, timeout: float = 10) -> bool:
        with self._queue_changed:
            return self._queue_changed.wait_for(lambda: self._queue_length == frames, timeout)


def sample(metrics: EdgeMetrics, name: str, runner: TailRunner) -> float:
    return metrics.registry.get_sample_value(name, {"model": runner.fingerprint[:12]}) or 0.0


def test_frames_queued_together_run_as_one_batch_with_each_images_own_logits(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frames: list[pb.SpikeFrame], checkpoint: Path
) -> None:
    blocking, metrics = BlockingRunner(runner), WatchedMetrics()
    stub = pb_grpc.SplitInferenceStub(serve(blocking, max_concurrency=16, metrics=metrics))
    first = stub.Infer.future(frames[0], timeout=30)
    assert blocking.entered.acquire(timeout=10)  # the worker is inside the tail with frame 0 alone
    rest = [stub.Infer.future(frame, timeout=30) for frame in frames[1:]]
    assert metrics.wait_for_queued(len(rest))  # the five others decoded and queued behind it
    blocking.release.set()
    replies = [first.result(), *(future.result() for future in rest)]

    assert blocking.batch_sizes == [1, len(rest)]  # one tail run for the five queued frames
    assert [reply.timing.batch_images for reply in replies] == [1] + [len(rest)] * len(rest)
    assert blocking.most_at_once == 1
    assert sample(metrics, "sbn_edge_tail_batch_images_count", runner) == 2
    assert sample(metrics, "sbn_edge_tail_batch_images_sum", runner) == len(frames)
    for seed, reply in zip(SEEDS, replies, strict=True):
        assert (reply.batch_size, reply.request_id) == (1, frames[seed - 1].request_id)
        logits = torch.tensor(reply.values)
        reference = monolithic_logits(checkpoint, synthetic_png(seed))  # the whole model on this image alone
        assert logits.argmax() == reference.argmax()
        torch.testing.assert_close(logits, reference, atol=1e-4, rtol=0)


def test_a_frame_whose_deadline_passes_in_the_queue_never_runs(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frames: list[pb.SpikeFrame]
) -> None:
    blocking, metrics = BlockingRunner(runner), WatchedMetrics()
    stub = pb_grpc.SplitInferenceStub(serve(blocking, max_concurrency=4, metrics=metrics))
    first = stub.Infer.future(frames[0], timeout=30)
    assert blocking.entered.acquire(timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        stub.Infer(frames[1], timeout=0.3)  # queued behind the held batch until its deadline passes
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Whenever its handler runs (gRPC may even drop a call that expired before dispatch), the frame is past
    # its deadline by now: refused before it is queued, or skipped by the worker once the tail is released.
    blocking.release.set()
    assert first.result().batch_size == 1
    assert stub.Infer(frames[2], timeout=30).batch_size == 1
    assert blocking.batch_sizes == [1, 1]  # frames 0 and 2: frame 1 was dropped, not run


def test_a_cancelled_call_frees_its_slot_at_once(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frames: list[pb.SpikeFrame]
) -> None:
    blocking, metrics = BlockingRunner(runner), WatchedMetrics()
    stub = pb_grpc.SplitInferenceStub(serve(blocking, max_concurrency=2, metrics=metrics))
    running = stub.Infer.future(frames[0], timeout=30)
    assert blocking.entered.acquire(timeout=10)
    waiting = stub.Infer.future(frames[1], timeout=30)  # takes the second and last slot, queued
    assert metrics.wait_for_queued(1)  # admitted: only now is the edge full
    with pytest.raises(grpc.RpcError) as e:
        stub.Infer(frames[2], timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    waiting.cancel()
    assert metrics.wait_for_refusal("CANCELLED")  # counted as the slot is released
    admitted = stub.Infer.future(frames[2], timeout=30)  # while the tail is still held: the slot came back
    blocking.release.set()
    assert running.result().batch_size == 1 and admitted.result().batch_size == 1
    assert blocking.batch_sizes == [1, 1]  # the cancelled frame never ran


def test_a_batch_stops_growing_at_the_policys_image_count(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frames: list[pb.SpikeFrame]
) -> None:
    blocking, metrics = BlockingRunner(runner), WatchedMetrics()
    stub = pb_grpc.SplitInferenceStub(
        serve(blocking, max_concurrency=8, metrics=metrics, batching=BatchPolicy(max_images=2, max_wait_s=0))
    )
    first = stub.Infer.future(frames[0], timeout=30)
    assert blocking.entered.acquire(timeout=10)
    rest = [stub.Infer.future(frame, timeout=30) for frame in frames[1:]]
    assert metrics.wait_for_queued(len(rest))
    blocking.release.set()
    assert all(future.result().batch_size == 1 for future in [first, *rest])
    assert blocking.batch_sizes == [1, 2, 2, 1]
