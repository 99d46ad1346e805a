"""Prometheus metrics of the edge, served over HTTP at ``http://HOST:METRICS_PORT/metrics`` when
``metrics_port`` is set (off by default: the edge's one required port stays the gRPC one).

    sbn_edge_frames_total{code}          Infer calls, one spike frame each, by the gRPC status answered
                                         (OK, INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED)
    sbn_edge_images_total                images the tail ran: the batch dimension B of the frames answered OK
    sbn_edge_frame_batch_size            histogram of B over the frames answered OK

A device's ``POST /classify/batch`` of n images adds 1 to the frame count and n to the image count.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger("sbn.edge")

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class EdgeMetrics:
    """The metrics of one servicer, in a registry of their own so that several edges can share a process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.frames = Counter("sbn_edge_frames", "Infer calls (one spike frame each), by the gRPC status answered",
                              ["code"], registry=self.registry)
        self.images = Counter("sbn_edge_images", "images run through the tail: the batch size B of each frame "
                                                 "answered OK", registry=self.registry)
        self.batch_size = Histogram("sbn_edge_frame_batch_size", "batch size B of the frames answered OK",
                                    buckets=BATCH_BUCKETS, registry=self.registry)

    def answered(self, batch_size: int) -> None:
        self.frames.labels("OK").inc()
        self.images.inc(batch_size)
        self.batch_size.observe(batch_size)

    def refused(self, code_name: str) -> None:
        self.frames.labels(code_name).inc()


class MetricsEndpoint:
    """``GET /metrics`` of ``metrics`` over HTTP on a daemon thread; ``close()`` stops it."""

    def __init__(self, metrics: EdgeMetrics, host: str, port: int) -> None:
        """Raises OSError if the port is taken."""
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host.strip("[]"), registry=metrics.registry)
        self.port: int = self._server.server_port

    @classmethod
    def start(cls, metrics: EdgeMetrics, host: str, port: int | None) -> MetricsEndpoint | None:
        """The endpoint on ``host:port`` (port 0: any free one); None, and nothing started, if ``port`` is None."""
        if port is None:
            return None
        endpoint = cls(metrics, host, port)
        log.info("Prometheus metrics on http://%s:%d/metrics", host, endpoint.port)
        return endpoint

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
