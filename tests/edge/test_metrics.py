"""The edge's Prometheus metrics: one frame counted per Infer call, by the status it got, and served over HTTP."""

from __future__ import annotations

import grpc
import httpx
import pytest

from edge.metrics import EdgeMetrics, MetricsEndpoint
from edge.server import create_server
from edge.tail_runner import TailRunner
from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb
from shared.rpc.spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import altered


def test_frames_are_counted_by_status_and_images_by_batch_size(runner: TailRunner, frame: pb.SpikeFrame) -> None:
    metrics = EdgeMetrics()
    server, _, servicer = create_server(runner, 2, metrics=metrics)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    endpoint = MetricsEndpoint.start(metrics, "127.0.0.1", 0)
    assert endpoint is not None
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SplitInferenceStub(channel)
            t, _, c, h, w = frame.shape
            double = altered(frame, shape=[t, 2, c, h, w], payload=frame.payload * 2)
            assert stub.Infer(frame, timeout=10).batch_size == 1
            assert stub.Infer(double, timeout=10).batch_size == 2
            with pytest.raises(grpc.RpcError):
                stub.Infer(altered(frame, payload=b"\x00"), timeout=10)
        text = httpx.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10).text
    finally:
        endpoint.close()
        server.stop(None)
        servicer.close()
    assert 'sbn_edge_frames_total{code="OK"} 2.0' in text
    assert 'sbn_edge_frames_total{code="INVALID_ARGUMENT"} 1.0' in text
    assert "sbn_edge_images_total 3.0" in text
    assert "sbn_edge_frame_batch_size_count 2.0" in text


def test_no_metrics_port_starts_nothing() -> None:
    assert MetricsEndpoint.start(EdgeMetrics(), "127.0.0.1", None) is None
