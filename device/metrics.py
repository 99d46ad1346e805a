"""Prometheus metrics of the device, served at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .classification import Classification

CLASSIFY_PATH = "/classify"


class DeviceMetrics:
    """The metrics of one app, in a registry of their own so that several apps can share a process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sbn_device_classify_requests", "POST /classify responses, by HTTP status",
                                ["status"], registry=self.registry)
        self.latency = Histogram("sbn_device_classify_latency_seconds",
                                 "successful classifications, upload received to result", registry=self.registry)
        self.transmitted = Counter("sbn_device_transmitted_bytes", "spike payload bytes sent to the edge",
                                   registry=self.registry)
        self.energy = Counter("sbn_device_energy_millijoules", "estimated energy of the heads run on this device",
                              ["estimate"], registry=self.registry)

    def observe(self, result: Classification) -> None:
        self.latency.observe(result.latency_ms.total / 1e3)
        self.transmitted.inc(result.transmitted_bytes)
        self.energy.labels("device_45nm").inc(result.energy.device_45nm_mj)
        self.energy.labels("device_rolls").inc(result.energy.device_rolls_mj)
        self.energy.labels("ann_baseline_45nm").inc(result.energy.ann_baseline_45nm_mj)

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
