"""Prometheus metrics of the device, served at ``GET /metrics``.

sbn_device_classify_requests_total{status}   POST /classify responses by HTTP status
sbn_device_classify_latency_seconds           successful classifications, upload in hand to result
sbn_device_stage_seconds{stage}               per request: preprocess (decoding its images), queue (waiting
                                              for the head), head, encode (of the head run that carried it),
                                              edge (the edge's own time), network (round trip minus the
                                              edge's time)
sbn_device_head_batch_images                  images per head run (concurrent uploads share one forward)
sbn_device_edge_batch_images                  images in the edge's tail run that carried a frame
sbn_device_head_queue                         requests waiting for the head, as last seen
sbn_device_transmitted_bytes_total, sbn_device_energy_millijoules_total{estimate}
sbn_device_streamed_time_steps_total{kind}    streamed requests' time steps, sent and computed (early exit)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .classification import Classification
from .edge_client import EdgeReply
from .head_runner import JobResult

CLASSIFY_PATH = "/classify"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class DeviceMetrics:
    """The metrics of one app, in a registry of their own so that several apps can share a process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sbn_device_classify_requests",
            "POST /classify responses, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sbn_device_classify_latency_seconds",
            "successful classifications, upload received to result",
            registry=self.registry,
        )
        self.transmitted = Counter(
            "sbn_device_transmitted_bytes", "spike payload bytes sent to the edge", registry=self.registry
        )
        self.energy = Counter(
            "sbn_device_energy_millijoules",
            "estimated energy of the heads run on this device",
            ["estimate"],
            registry=self.registry,
        )
        self.stage = Histogram(
            "sbn_device_stage_seconds",
            "time of one request in each stage of the split path",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.head_batch = Histogram(
            "sbn_device_head_batch_images", "images per head run", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.edge_batch = Histogram(
            "sbn_device_edge_batch_images",
            "images in the edge's tail run of a frame",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.head_queue = Gauge("sbn_device_head_queue", "requests waiting for the head", registry=self.registry)
        self.streamed_steps = Counter(
            "sbn_device_streamed_time_steps",
            "streamed requests' time steps, by kind: sent to the edge, computed by the head",
            ["kind"],
            registry=self.registry,
        )

    def ran_head(self, images: int) -> None:
        self.head_batch.observe(images)

    def observe_decode(self, ms: float) -> None:
        self.stage.labels("preprocess").observe(ms / 1e3)

    def observe_head(self, job: JobResult) -> None:
        timings = job.timings
        for stage, ms in (("queue", job.queue_ms), ("head", timings.head_ms), ("encode", timings.encode_ms)):
            self.stage.labels(stage).observe(ms / 1e3)

    def observe_edge(self, reply: EdgeReply) -> None:
        self.stage.labels("edge").observe(reply.edge_ms / 1e3)
        self.stage.labels("network").observe(max(0.0, reply.round_trip_ms - reply.edge_ms) / 1e3)
        self.edge_batch.observe(reply.edge_batch_images)

    def observe(self, result: Classification) -> None:
        self.latency.observe(result.latency_ms.total / 1e3)
        self.transmitted.inc(result.transmitted_bytes)
        self.energy.labels("device_45nm").inc(result.energy.device_45nm_mj)
        self.energy.labels("device_rolls").inc(result.energy.device_rolls_mj)
        self.energy.labels("ann_baseline_45nm").inc(result.energy.ann_baseline_45nm_mj)
        if result.time_steps_sent is not None and result.time_steps_computed is not None:  # streamed: both set
            self.streamed_steps.labels("sent").inc(result.time_steps_sent)
            self.streamed_steps.labels("computed").inc(result.time_steps_computed)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountClassifyResponses:
    """ASGI middleware counting every /classify response by status, whichever layer produced it.

    Counting in the route would miss the responses of exception handlers and of the upload limit;
    an unhandled exception leaves this middleware before the outermost layer turns it into a 500,
    so it is counted as one here.
    """

    def __init__(self, app: ASGIApp, metrics: DeviceMetrics) -> None:
        self.app = app
        self.requests = metrics.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CLASSIFY_PATH:
            await self.app(scope, receive, send)
            return
        started = False

        async def send_counted(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.requests.labels(str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            if not started:
                self.requests.labels("500").inc()
            raise
