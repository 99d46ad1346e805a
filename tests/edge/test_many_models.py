"""One edge serving several models: frames routed by fingerprint, each to its own tail, over real gRPC."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import torch

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import altered, monolithic_logits

SPLIT_POINTS = (8, 3)  # different spike shapes: 4 x 4 x 8 x 8 and the earlier, larger RB3 frame


@pytest.fixture(scope="module")
def models(calibrated_checkpoint: Callable[..., Path]) -> list[tuple[TailRunner, pb.SpikeFrame]]:
    """(tail, a frame its head made of synthetic_png()) for each split point; the RB8 model first: the edge's
    default."""
    pairs = []
    for split_point in SPLIT_POINTS:
        checkpoint = calibrated_checkpoint(split_point)
        pairs.append((TailRunner.load(checkpoint, max_batch=2), HeadRunner.load(checkpoint).run(synthetic_png()).frame))
    return pairs


def test_each_frame_runs_on_its_own_models_tail(
    serve: Callable[..., grpc.Channel], models: list[tuple[TailRunner, pb.SpikeFrame]]
) -> None:
    assert models[0][1].shape != models[1][1].shape
    stub = pb_grpc.SplitInferenceStub(serve([runner for runner, _ in models]))
    for runner, frame in models:
        reply = stub.Infer(frame, timeout=30)
        assert reply.model_fingerprint == runner.fingerprint
        # the reference: that model's whole network on the image, in this process
        torch.testing.assert_close(
            torch.tensor(reply.values), monolithic_logits(runner.checkpoint.path, synthetic_png()), rtol=0, atol=1e-5
        )


def test_model_info_lists_every_served_model_the_default_first(
    serve: Callable[..., grpc.Channel], models: list[tuple[TailRunner, pb.SpikeFrame]]
) -> None:
    info = pb_grpc.SplitInferenceStub(serve([runner for runner, _ in models])).GetModelInfo(
        pb.ModelInfoRequest(), timeout=10
    )
    assert info.model_fingerprint == models[0][0].fingerprint  # the fields of old clients: the default model
    assert [(m.model_fingerprint, m.split_point, m.split_point_name, tuple(m.spike_shape)) for m in info.models] == [
        (runner.fingerprint, runner.split_point.index, runner.split_point.name, runner.spike_shape)
        for runner, _ in models
    ]


def test_a_frame_of_a_model_not_served_names_every_served_model(
    serve: Callable[..., grpc.Channel], models: list[tuple[TailRunner, pb.SpikeFrame]]
) -> None:
    stub = pb_grpc.SplitInferenceStub(serve([runner for runner, _ in models]))
    with pytest.raises(grpc.RpcError) as e:
        stub.Infer(altered(models[0][1], model_fingerprint="ab" * 32), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ab" * 32 in e.value.details()
    assert all(
        f"{runner.fingerprint} (spiking_resnet50 {runner.split_point.name})" in e.value.details()
        for runner, _ in models
    )


def test_a_frame_shaped_for_the_other_model_is_refused(
    serve: Callable[..., grpc.Channel], models: list[tuple[TailRunner, pb.SpikeFrame]]
) -> None:
    (rb8, rb8_frame), (rb3, rb3_frame) = models
    stub = pb_grpc.SplitInferenceStub(serve([rb8, rb3]))
    with pytest.raises(grpc.RpcError) as e:  # RB3's spikes labelled as RB8's model
        stub.Infer(altered(rb3_frame, model_fingerprint=rb8.fingerprint), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
