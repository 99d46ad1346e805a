"""The device's gRPC client against a scripted edge: a real grpc.aio server on 127.0.0.1 whose answers each test
writes by hand, so every way an edge can answer wrongly or fail is met once.

The client must hand back the logits of the frame it sent, shaped [B, classes], and turn everything else into the
typed error the HTTP layer maps to a status: a reply for another request, model or shape is a bad reply (502), an
overloaded or unreachable edge is unavailable (503), a deadline is a timeout (504), another model is a mismatch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import pytest

from spikebottlenet.device.deadline import Deadline
from spikebottlenet.device.edge_client import (
    EdgeBadReply,
    EdgeClient,
    EdgeModelMismatch,
    EdgeRejected,
    EdgeTimeout,
    EdgeUnavailable,
)
from spikebottlenet.shared.processes import free_port
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc

CLASSES = 3
FRAME = pb.SpikeFrame(
    request_id="r1",
    model_fingerprint="f" * 64,
    split_point=8,
    shape=[4, 2, 4, 8, 8],
    codec=pb.CODEC_RAW,
    payload=bytes(256),
)  # B = 2 images

Answer = Callable[[pb.SpikeFrame, grpc.aio.ServicerContext], Awaitable[pb.Logits]]


def logits_for(frame: pb.SpikeFrame, **changes: object) -> pb.Logits:
    """The right answer to ``frame`` (values 0, 1, 2, ... row by row), with ``changes`` made to it."""
    fields = dict(
        request_id=frame.request_id,
        model_fingerprint=frame.model_fingerprint,
        batch_size=frame.shape[1],
        num_classes=CLASSES,
        values=[float(v) for v in range(frame.shape[1] * CLASSES)],
        timing=pb.EdgeTiming(total_ms=1.5, batch_images=frame.shape[1]),
        served_by="edge-1",
    )
    return pb.Logits(**{**fields, **changes})


class ScriptedEdge(pb_grpc.SplitInferenceServicer):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    async def Infer(self, request: pb.SpikeFrame, context: grpc.aio.ServicerContext) -> pb.Logits:
        return await self.answer(request, context)


async def infer_against(answer: Answer, deadline_s: float = 5.0) -> object:
    """``EdgeClient.infer(FRAME)`` against an edge that answers with ``answer``; the reply, or the error raised."""
    server = grpc.aio.server()
    pb_grpc.add_SplitInferenceServicer_to_server(ScriptedEdge(answer), server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        async with EdgeClient(f"127.0.0.1:{port}", probe_timeout_s=1.0, max_calls=2, keepalive_s=0) as client:
            try:
                return await client.infer(FRAME, CLASSES, Deadline.after(deadline_s))
            except Exception as e:  # what the test checks
                return e
    finally:
        await server.stop(grace=None)


def run(answer: Answer, deadline_s: float = 5.0) -> object:
    return asyncio.run(infer_against(answer, deadline_s))


def test_the_logits_come_back_shaped_batch_by_class() -> None:
    async def right(frame: pb.SpikeFrame, context: grpc.aio.ServicerContext) -> pb.Logits:
        return logits_for(frame)

    reply = run(right)
    assert reply.logits.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]  # [B = 2, classes = 3], row by row
    assert reply.logits.dtype == np.float32
    assert (reply.edge_ms, reply.edge_batch_images, reply.served_by) == (1.5, 2, "edge-1")
    assert reply.round_trip_ms > 0


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"request_id": "r2"}, "request id 'r2'"),
        ({"model_fingerprint": "e" * 64}, "model fingerprint"),
        ({"batch_size": 1}, "batch size 1"),
        ({"num_classes": 4}, "class count 4"),
        ({"values": [0.0] * 5}, "number of logits 5"),
    ],
    ids=["request", "model", "batch", "classes", "values"],
)
def test_a_reply_that_does_not_answer_the_frame_is_a_bad_reply(changes: dict[str, object], named: str) -> None:
    async def wrong(frame: pb.SpikeFrame, context: grpc.aio.ServicerContext) -> pb.Logits:
        return logits_for(frame, **changes)

    error = run(wrong)
    assert isinstance(error, EdgeBadReply) and named in str(error), error


@pytest.mark.parametrize(
    "code, error_type",
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, EdgeUnavailable),  # busy: retry later
        (grpc.StatusCode.FAILED_PRECONDITION, EdgeModelMismatch),  # another model
        (grpc.StatusCode.INVALID_ARGUMENT, EdgeRejected),  # refused the frame
        (grpc.StatusCode.INTERNAL, EdgeRejected),  # failed on it
    ],
)
def test_each_refusal_is_its_typed_error_with_the_edges_words(code: grpc.StatusCode, error_type: type) -> None:
    async def refuse(frame: pb.SpikeFrame, context: grpc.aio.ServicerContext) -> pb.Logits:
        await context.abort(code, "scripted refusal")

    error = run(refuse)
    assert type(error) is error_type and f"{code.name}: scripted refusal" in str(error), error


def test_an_edge_slower_than_the_deadline_is_a_timeout() -> None:
    async def slow(frame: pb.SpikeFrame, context: grpc.aio.ServicerContext) -> pb.Logits:
        await asyncio.sleep(5)
        return logits_for(frame)

    assert isinstance(run(slow, deadline_s=0.3), EdgeTimeout)


def test_an_edge_that_is_not_there_is_unavailable() -> None:
    async def nobody() -> object:
        async with EdgeClient(f"127.0.0.1:{free_port()}", probe_timeout_s=1.0, max_calls=2, keepalive_s=0) as client:
            try:
                return await client.infer(FRAME, CLASSES, Deadline.after(5.0))
            except Exception as e:
                return e

    assert isinstance(asyncio.run(nobody()), EdgeUnavailable)
