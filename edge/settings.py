"""Settings of ``sbn edge`` (environment variables ``SBN_EDGE_<NAME>``) and ``sbn serve-ray`` (``SBN_RAY_<NAME>``),
each overridden by ``--<name>`` flags."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, FilePath, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from spikebottlenet.shared.settings import ModelSettings


class TailSettings(ModelSettings):
    """What every way of serving the tail shares: the models and micro-batching (ModelSettings), the largest frame."""

    max_batch: int = Field(
        32,
        ge=1,
        description="largest batch (B) a frame may carry; also bounds the message size. At least the "
        "max_batch of its devices, whose POST /classify/batch sends all its images in one frame",
    )
    device: str = Field(
        "cpu",
        description="where the decoder and tail run: cpu, or cuda[:N] (a raw payload is then unpacked on the GPU); "
        "a machine without that GPU refuses to start",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="fp32, or bf16: the decoder and tail under bfloat16 autocast (logits within a stated "
        "tolerance of fp32's, docs/deploy.md; meant for GPUs)",
    )

    @field_validator("device")
    @classmethod
    def _a_torch_device_name(cls, device: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", device):
            raise ValueError(f"{device!r} is not cpu, cuda or cuda:N")
        return device

    stream_max_s: float = Field(
        30.0,
        gt=0,
        description="longest an InferStream call may stay open, whatever its deadline: a stream holds "
        "resources of the edge's while open (under sbn edge one of its model's slots), so one "
        "a client leaves hanging is cancelled (and its state dropped) after this long",
    )


class EdgeSettings(TailSettings):
    model_config = SettingsConfigDict(env_prefix="SBN_EDGE_")

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 or [::] for all interfaces)")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: any free port)")
    max_concurrency: int = Field(
        32,
        ge=1,
        description="frames admitted at once per model, waiting for the inference worker or running, "
        "InferStream calls included from their first step; more are refused with "
        "RESOURCE_EXHAUSTED instead of queueing without bound",
    )
    stream_step_s: float = Field(
        1.0,
        gt=0,
        description="an InferStream call whose next step does not come within this long (its first: of "
        "opening; each later one: of the answer to the step before) is cancelled, so that a "
        "stream that stops sending holds neither a slot nor a peer's stream for long (a "
        "device sends each step as soon as its head has made it)",
    )
    max_streams_per_peer: int = Field(
        32,
        ge=1,
        description="InferStream calls one client address (its IP, whatever its ports and connections) may "
        "have open at once, counted from the call's first byte; one more is refused with "
        "RESOURCE_EXHAUSTED. At least the max_edge_calls of a streaming device; clients behind "
        "one NAT or proxy share it",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of a Prometheus HTTP endpoint (GET /metrics: frames by gRPC status, "
        "images, batch sizes, queue wait, decode and inference times) on host; "
        "default: none",
    )
    max_connection_age_s: float | None = Field(
        30.0,
        gt=0,
        description="a client connection is closed (gracefully: its calls in flight finish, up to "
        "stream_max_s) after this long, so that clients re-resolve the edge's name and "
        "spread over replicas started since (Compose --scale); unset: never",
    )
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="on SIGTERM/SIGINT, seconds in-flight RPCs get to finish before they are cancelled"
    )
    tls_cert: FilePath | None = Field(
        None, description="server certificate chain (PEM); with tls_key, the port speaks TLS only (default: plaintext)"
    )
    tls_key: FilePath | None = Field(None, description="private key (PEM) of tls_cert")
    tls_client_ca: FilePath | None = Field(
        None,
        description="CA certificate(s) (PEM); set, every client must present a certificate signed by one "
        "(mutual TLS), health probes included",
    )
    inject_delay_s: float = Field(
        0.0,
        ge=0,
        description="fault testing only: every Infer waits this long, holding its slot, before it runs (0: off)",
    )

    @model_validator(mode="after")
    def _tls_complete(self) -> EdgeSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for TLS, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key: client certificates are asked for over TLS")
        return self
