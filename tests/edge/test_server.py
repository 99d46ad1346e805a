"""The gRPC server around the tail, in-process: reflection, message size and concurrency limits."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from spikebottlenet.edge.server import max_frame_bytes
from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.shared.codec import encode
from spikebottlenet.shared.rpc.wire import CODEC_TO_WIRE
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.edge.blocking_runner import BlockingRunner
from tests.stack import altered


def test_reflection_lists_the_services(serve: Callable[..., grpc.Channel], runner: TailRunner) -> None:
    services = ProtoReflectionDescriptorDatabase(serve(runner)).get_services()
    assert {"spikebottlenet.v1.SplitInference", "grpc.health.v1.Health"} <= set(services)


def test_a_message_over_the_size_limit_is_refused_and_the_server_goes_on(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frame: pb.SpikeFrame
) -> None:
    stub = pb_grpc.SplitInferenceStub(serve(runner))
    with pytest.raises(grpc.RpcError) as e:
        stub.Infer(altered(frame, payload=bytes(max_frame_bytes([runner]))), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Infer(frame, timeout=10).batch_size == 1


@pytest.mark.parametrize("codec", ["raw", "sparse"])
def test_the_largest_legal_frame_fits_the_size_limit(runner: TailRunner, frame: pb.SpikeFrame, codec: str) -> None:
    t, c, h, w = runner.spike_shape
    shape = [t, runner.max_batch, c, h, w]
    # Half the positions firing at random leaves the sparse codec nothing to compress: its worst case.
    spikes = torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(0))
    used, payload = encode(spikes, codec)
    largest = altered(frame, shape=shape, codec=CODEC_TO_WIRE[used], payload=payload)
    assert runner.check(largest) and largest.ByteSize() < max_frame_bytes([runner])


def test_rpcs_beyond_max_concurrency_are_refused_not_queued(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frame: pb.SpikeFrame
) -> None:
    blocking = BlockingRunner(runner)
    stub = pb_grpc.SplitInferenceStub(serve(blocking, max_concurrency=1))
    first = stub.Infer.future(frame, timeout=10)
    assert blocking.entered.acquire(timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        stub.Infer(frame, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "all 1 inference slots of model" in e.value.details()
    blocking.release.set()
    assert first.result().batch_size == 1


def test_model_info_and_health_answer_while_every_slot_is_busy(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frame: pb.SpikeFrame
) -> None:
    blocking = BlockingRunner(runner)
    channel = serve(blocking, max_concurrency=1)
    stub = pb_grpc.SplitInferenceStub(channel)
    first = stub.Infer.future(frame, timeout=10)
    assert blocking.entered.acquire(timeout=10)
    try:
        assert stub.GetModelInfo(pb.ModelInfoRequest(), timeout=5).model_fingerprint == runner.fingerprint
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        blocking.release.set()
    assert first.result().batch_size == 1


def test_a_call_without_a_deadline_is_answered(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frame: pb.SpikeFrame
) -> None:
    # grpcurl and stubs called without timeout= set no deadline: gRPC then reports ~INT64_MAX seconds left
    reply = pb_grpc.SplitInferenceStub(serve(runner)).Infer(frame)
    assert reply.batch_size == 1 and len(reply.values) == 10
