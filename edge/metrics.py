"""Prometheus metrics of the edge, served over HTTP at ``http://HOST:METRICS_PORT/metrics`` when
``metrics_port`` is set (off by default: the edge's one required port stays the gRPC one).

Every series but the queue gauge carries ``model``: the first 12 hex digits of the served model's
fingerprint (``sbn_edge_model_info`` maps them to arch and split point); a frame for a model the
edge does not serve is counted under ``model="unknown"``.

    sbn_edge_model_info{model, arch, split_point}   1 per served model
    sbn_edge_frames_total{model, code}   Infer calls, one spike frame each, by the gRPC status answered: OK,
                                         or the refusal's reason (INVALID_ARGUMENT, FAILED_PRECONDITION,
                                         RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, CANCELLED, INTERNAL)
    sbn_edge_images_total{model}         images the tail ran: the batch dimension B of the frames answered OK
    sbn_edge_frame_batch_size{model}     histogram of B over the frames answered OK
    sbn_edge_tail_batch_images{model}    histogram of the images per tail run (micro-batching: frames that
                                         arrived together run as one batch)
    sbn_edge_tail_batch_frames{model}    histogram of the frames per tail run
    sbn_edge_queued_frames               gauge: frames waiting for the inference worker now, all models
    sbn_edge_queue_wait_seconds{model}   histogram: a frame's wait for the inference worker
    sbn_edge_decode_seconds{model}       histogram: a frame's payload -> spike tensor
    sbn_edge_inference_seconds{model}    histogram: decoder + tail of one batch
    sbn_edge_open_streams                gauge: InferStream calls open now, all models, from their first byte
    sbn_edge_stream_steps_total{model}   streamed time steps run
    sbn_edge_fec_corrected_bytes_total{model}   payload bytes Reed–Solomon parity put right
    sbn_edge_fec_failed_blocks_total{model}     parity blocks with more damage than they correct
    sbn_edge_erased_chunks_total{model}         entropy chunks that failed their CRC and ran as silence

A device's ``POST /classify/batch`` of n images adds 1 to the frame count and n to the image count.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from spikebottlenet.v1.split_inference_pb2 import LinkDamage

log = logging.getLogger("sbn.edge")

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# A demo tail takes about a millisecond, a full-width one a few hundred.
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UNKNOWN_MODEL = "unknown"


def model_label(fingerprint: str) -> str:
    """The ``model`` label of a fingerprint: short enough to read, long enough not to collide in practice."""
    return fingerprint[:12]


class EdgeMetrics:
    """The metrics of one servicer, in a registry of their own so that several edges can share a process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.model_info = Gauge(
            "sbn_edge_model_info", "1 for each served model", ["model", "arch", "split_point"], registry=r
        )
        self.frames = Counter(
            "sbn_edge_frames",
            "Infer calls (one spike frame each), by the gRPC status answered",
            ["model", "code"],
            registry=r,
        )
        self.images = Counter(
            "sbn_edge_images",
            "images run through the tail: the batch size B of each frame answered OK",
            ["model"],
            registry=r,
        )
        self.batch_size = Histogram(
            "sbn_edge_frame_batch_size",
            "batch size B of the frames answered OK",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.tail_batch_images = Histogram(
            "sbn_edge_tail_batch_images",
            "images per tail run (micro-batching)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.tail_batch_frames = Histogram(
            "sbn_edge_tail_batch_frames",
            "frames per tail run (micro-batching)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queued = Gauge("sbn_edge_queued_frames", "frames waiting for the inference worker", registry=r)
        self.queue_wait = Histogram(
            "sbn_edge_queue_wait_seconds",
            "a frame's wait for the inference worker",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.decode = Histogram(
            "sbn_edge_decode_seconds",
            "a frame's payload -> spike tensor",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "sbn_edge_inference_seconds", "decoder + tail of one batch", ["model"], buckets=SECONDS_BUCKETS, registry=r
        )
        self.open_streams = Gauge("sbn_edge_open_streams", "InferStream calls open now", registry=r)
        self.stream_steps = Counter("sbn_edge_stream_steps", "streamed time steps run", ["model"], registry=r)
        self.fec_corrected = Counter(
            "sbn_edge_fec_corrected_bytes", "payload bytes Reed–Solomon parity put right", ["model"], registry=r
        )
        self.fec_failed = Counter(
            "sbn_edge_fec_failed_blocks", "parity blocks with more damage than they correct", ["model"], registry=r
        )
        self.erased_chunks = Counter(
            "sbn_edge_erased_chunks", "entropy chunks that failed their CRC and ran as silence", ["model"], registry=r
        )

    def serving(self, fingerprint: str, arch: str, split_point_name: str) -> None:
        self.model_info.labels(model_label(fingerprint), arch, split_point_name).set(1)

    def set_queued(self, frames: int) -> None:
        self.queued.set(frames)

    def decoded(self, fingerprint: str, seconds: float, damage: LinkDamage) -> None:
        model = model_label(fingerprint)
        self.decode.labels(model).observe(seconds)
        self.fec_corrected.labels(model).inc(damage.fec_corrected_bytes)
        self.fec_failed.labels(model).inc(damage.fec_failed_blocks)
        self.erased_chunks.labels(model).inc(damage.erased_chunks)

    def stream_opened(self) -> None:
        self.open_streams.inc()

    def stream_closed(self) -> None:
        self.open_streams.dec()

    def stream_step(self, fingerprint: str) -> None:
        self.stream_steps.labels(model_label(fingerprint)).inc()

    def waited(self, fingerprint: str, seconds: float) -> None:
        self.queue_wait.labels(model_label(fingerprint)).observe(seconds)

    def ran_batch(self, fingerprint: str, frames: int, images: int, seconds: float) -> None:
        model = model_label(fingerprint)
        self.tail_batch_frames.labels(model).observe(frames)
        self.tail_batch_images.labels(model).observe(images)
        self.inference.labels(model).observe(seconds)

    def answered(self, fingerprint: str, batch_size: int) -> None:
        model = model_label(fingerprint)
        self.frames.labels(model, "OK").inc()
        self.images.labels(model).inc(batch_size)
        self.batch_size.labels(model).observe(batch_size)

    def refused(self, fingerprint: str | None, code_name: str) -> None:
        """A refusal; ``fingerprint`` None: the frame named no model this edge serves."""
        self.frames.labels(UNKNOWN_MODEL if fingerprint is None else model_label(fingerprint), code_name).inc()


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
