"""The edge's Prometheus metrics: one frame counted per Infer call, by the status it got, and served over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from spikebottlenet.edge.metrics import EdgeMetrics, MetricsEndpoint
from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import altered, scraped


def test_frames_are_counted_by_status_and_images_by_batch_size(
    serve: Callable[..., grpc.Channel], runner: TailRunner, frame: pb.SpikeFrame
) -> None:
    metrics, model = EdgeMetrics(), runner.fingerprint[:12]
    stub = pb_grpc.SplitInferenceStub(serve(runner, 2, metrics=metrics))
    endpoint = MetricsEndpoint.start(metrics, "127.0.0.1", 0)
    assert endpoint is not None
    try:
        t, _, c, h, w = frame.shape
        double = altered(frame, shape=[t, 2, c, h, w], payload=frame.payload * 2)
        assert stub.Infer(frame, timeout=10).batch_size == 1
        assert stub.Infer(double, timeout=10).batch_size == 2
        with pytest.raises(grpc.RpcError):
            stub.Infer(altered(frame, payload=b"\x00"), timeout=10)
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        counts = {
            code: scraped(url, "sbn_edge_frames_total", model=model, code=code) for code in ("OK", "INVALID_ARGUMENT")
        }
        images = scraped(url, "sbn_edge_images_total", model=model)
        info = scraped(url, "sbn_edge_model_info", model=model, arch="spiking_resnet50", split_point="RB8")
        frames_answered = scraped(url, "sbn_edge_frame_batch_size_count", model=model)
    finally:
        endpoint.close()
    assert counts == {"OK": 2, "INVALID_ARGUMENT": 1}
    assert (images, info, frames_answered) == (3, 1, 2)


def test_no_metrics_port_starts_nothing() -> None:
    assert MetricsEndpoint.start(EdgeMetrics(), "127.0.0.1", None) is None
