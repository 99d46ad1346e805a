"""Bad frames sent to a real edge process: the right gRPC status, a message naming the problem, and the
edge still answers a good frame correctly afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.edge.settings import EdgeSettings
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint_metadata import read_checkpoint_info
from spikebottlenet.shared.rpc.wire import SERVICE_NAME
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import EdgeProcess, altered, monolithic_logits


@pytest.fixture(scope="module")
def channel(edges: dict[int, EdgeProcess]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(edges[8].address) as channel:
        yield channel


@pytest.fixture(scope="module")
def checkpoint(calibrated_checkpoint: Callable[..., Path]) -> Path:
    return calibrated_checkpoint(8)


@pytest.fixture(scope="module")
def frame(checkpoint: Path) -> pb.SpikeFrame:
    return HeadRunner.load(checkpoint).run(synthetic_png()).frame


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
def test_health_reports_serving(channel: grpc.Channel, service: str) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_model_info_matches_the_checkpoint(channel: grpc.Channel, checkpoint: Path) -> None:
    info = pb_grpc.SplitInferenceStub(channel).GetModelInfo(pb.ModelInfoRequest(), timeout=5)
    expected = read_checkpoint_info(checkpoint)
    assert (info.model_fingerprint, info.split_point, tuple(info.spike_shape), info.trained) == (
        expected.fingerprint,
        8,
        expected.config.spike_shape,
        False,
    )
    assert (info.arch, info.split_point_name) == ("spiking_resnet50", "RB8")


OTHER_FINGERPRINT = "0123456789abcdef" * 4
MAX_BATCH = EdgeSettings.model_fields["max_batch"].default  # the edge processes run the default

# (field changes, expected status, words the details must contain); the model's spikes are 4 x 4 x 8 x 8
BAD_FRAMES = {
    "short payload": (dict(payload=b"\x00" * 100), grpc.StatusCode.INVALID_ARGUMENT, ["100 bytes", "exactly 128"]),
    "wrong shape": (
        dict(shape=[4, 1, 2, 8, 8]),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["[4, 1, 2, 8, 8]", "(4, B, 4, 8, 8)"],
    ),
    "four shape entries": (dict(shape=[4, 4, 8, 8]), grpc.StatusCode.INVALID_ARGUMENT, ["5 entries"]),
    "batch over the limit": (
        dict(shape=[4, MAX_BATCH + 1, 4, 8, 8]),
        grpc.StatusCode.INVALID_ARGUMENT,
        [f"batch size {MAX_BATCH + 1}", f"1..{MAX_BATCH}"],
    ),
    "wrong fingerprint": (
        dict(model_fingerprint=OTHER_FINGERPRINT),
        grpc.StatusCode.FAILED_PRECONDITION,
        [OTHER_FINGERPRINT, "which this edge does not serve; it serves"],
    ),
    "unknown codec": (dict(codec=9), grpc.StatusCode.INVALID_ARGUMENT, ["unknown codec 9"]),
    "unspecified codec": (dict(codec=pb.CODEC_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT, ["unspecified"]),
    "wrong split point": (dict(split_point=9), grpc.StatusCode.INVALID_ARGUMENT, ["split point 9", "RB8"]),
    "corrupt sparse payload": (
        dict(codec=pb.CODEC_SPARSE, payload=b"\x13garbage"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["sparse payload"],
    ),
}


@pytest.mark.parametrize("fields, code, words", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_a_bad_frame_gets_a_status_naming_the_problem_and_the_edge_goes_on(
    channel: grpc.Channel, frame: pb.SpikeFrame, checkpoint: Path, fields: dict, code: grpc.StatusCode, words: list[str]
) -> None:
    stub = pb_grpc.SplitInferenceStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Infer(altered(frame, **fields), timeout=10)
    assert e.value.code() == code
    for word in words:
        assert word in e.value.details()
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        assert read_checkpoint_info(checkpoint).fingerprint in e.value.details()

    reply = stub.Infer(frame, timeout=10)
    assert reply.request_id == frame.request_id
    torch.testing.assert_close(
        torch.tensor(reply.values), monolithic_logits(checkpoint, synthetic_png()), rtol=0, atol=1e-5
    )
