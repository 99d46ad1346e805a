"""InferStream in-process: a stream left hanging by its client is cut off and its slot comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.edge.server import StreamLimits
from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc


def test_a_hanging_stream_is_cut_off_after_stream_max_s_and_frees_its_slot(
    runner: TailRunner, checkpoint: Path, frame: pb.SpikeFrame, serve: Callable[..., grpc.Channel]
) -> None:
    stub = pb_grpc.SplitInferenceStub(serve(runner, max_concurrency=1, streams=StreamLimits(max_s=0.5)))
    first = HeadRunner.load(checkpoint).open_stream(synthetic_png()).step()
    released = threading.Event()

    def one_step_then_nothing() -> Iterator[pb.SpikeStep]:
        yield first
        released.wait(30)

    start = time.monotonic()
    call = stub.InferStream(one_step_then_nothing(), timeout=60)  # the client's own deadline is far away
    assert next(call).step == 0
    # the one slot is the stream's: a frame is refused as busy meanwhile
    with pytest.raises(grpc.RpcError) as busy:
        stub.Infer(frame, timeout=10)
    assert busy.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as cut:
        next(call)
    assert cut.value.code() is grpc.StatusCode.CANCELLED and time.monotonic() - start < 10
    released.set()
    assert stub.Infer(frame, timeout=10).batch_size == 1  # the slot came back


def test_a_stream_that_stops_sending_mid_way_is_cut_after_stream_step_s_and_frees_its_slot(
    runner: TailRunner, checkpoint: Path, frame: pb.SpikeFrame, serve: Callable[..., grpc.Channel]
) -> None:
    step_s = 0.5
    stub = pb_grpc.SplitInferenceStub(serve(runner, max_concurrency=1, streams=StreamLimits(max_s=30, step_s=step_s)))
    first = HeadRunner.load(checkpoint).open_stream(synthetic_png()).step()
    released = threading.Event()

    def one_step_then_nothing() -> Iterator[pb.SpikeStep]:
        yield first
        released.wait(30)

    call = stub.InferStream(one_step_then_nothing(), timeout=60)
    assert next(call).step == 0
    answered = time.monotonic()
    with pytest.raises(grpc.RpcError) as cut:
        next(call)
    waited = time.monotonic() - answered
    # cut for its missing step 1, long before stream_max_s; not before step_s (the edge's timer starts after it
    # wrote the answer this client read, so a little less can pass here)
    assert cut.value.code() is grpc.StatusCode.CANCELLED and "no step 1 within stream_step_s" in cut.value.details()
    assert step_s - 0.1 <= waited < 10
    released.set()
    assert stub.Infer(frame, timeout=10).batch_size == 1  # the slot came back
