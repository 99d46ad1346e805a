"""The probes: ``GET /healthz`` (the process is up), ``GET /readyz`` (the edge serves this device's models),
``GET /metrics`` (Prometheus).

The probes stay open with an API key set, as orchestrators call them without credentials; /readyz then
shows the edge's addresses only to a request carrying the key (/metrics needs it: device/app.py).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from ..api_key import carries_key
from ..edge_client import EdgeError
from ..edge_replicas import TargetError
from ..model_set import ModelSet, ServedModel
from .deps import Metrics, Pipeline, Settings
from .errors import ErrorDetail, withhold_address

log = logging.getLogger("sbn.device")

METRICS_PATH = "/metrics"


class Liveness(BaseModel):
    status: str = "alive"


class HeadReadiness(BaseModel):
    arch: str
    split_point: int
    split_point_name: str
    model_fingerprint: str
    edge_serves: bool = Field(description="the edge serves this head's tail; if not, requests for it get 502")
    edge_ms: float | None = Field(description="the edge's time per image for this model, as the planner sees it")

    @classmethod
    def of(cls, model: ServedModel) -> HeadReadiness:
        head = model.head
        return cls(
            arch=model.key[0],
            split_point=model.key[1],
            split_point_name=head.split_point.name,
            model_fingerprint=head.checkpoint.fingerprint,
            edge_serves=bool(model.edge_serves),
            edge_ms=model.costs.edge_ms,
        )


class Readiness(BaseModel):
    status: str = "ready"
    edge: str | None = Field(default=None, description="the edge's gRPC target; only with the API key")
    model_fingerprint: str = Field(description="the default model's")
    arch: str = Field(description="the default model's backbone")
    split_point: int = Field(description="the default model's k: the bottleneck follows the backbone's k-th block")
    split_point_name: str = Field(description="the block's name, e.g. RB8 or IRB8")
    heads: list[HeadReadiness] = Field(description="every head this device holds, the default first")
    edge_replicas: int | None = Field(
        default=None,
        description="edge replicas that answer, of the addresses the edge target resolves to now (the "
        "device's calls take turns over them); none where the target cannot be listed",
    )
    edge_addresses: list[str] | None = Field(default=None, description="those addresses; only with the API key")

    @classmethod
    def of(
        cls, models: ModelSet, edge: str | None, edge_replicas: int | None, edge_addresses: list[str] | None
    ) -> Readiness:
        default = HeadReadiness.of(models.default)
        return cls(
            edge=edge,
            model_fingerprint=default.model_fingerprint,
            arch=default.arch,
            split_point=default.split_point,
            split_point_name=default.split_point_name,
            heads=[HeadReadiness.of(model) for model in models],
            edge_replicas=edge_replicas,
            edge_addresses=edge_addresses,
        )


router = APIRouter()


@router.get("/healthz")
async def healthz() -> Liveness:
    return Liveness()


@router.get("/readyz", responses={503: {"model": ErrorDetail}})
async def readyz(request: Request, pipeline: Pipeline, settings: Settings) -> Readiness:
    """Whether the edge serves this device's models. The edge's addresses only to a request with the API key (to
    none where no key is set): the probe is open to all."""
    edge = pipeline.edge.address
    try:
        await pipeline.check_edge()
    except EdgeError as e:
        log.warning("not ready: %s", e)
        detail = f"not ready: {withhold_address(str(e), edge)}"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from None
    addresses: list[str] | None
    answering: list[str] | None
    try:
        addresses, answering = await pipeline.edge.replicas()
    except TargetError:
        addresses = answering = None
    key = settings.api_key
    shown = key is not None and carries_key(request.scope, key.get_secret_value().encode())
    return Readiness.of(
        pipeline.models,
        edge=edge if shown else None,
        edge_replicas=None if answering is None else len(answering),
        edge_addresses=addresses if shown else None,
    )


@router.get(METRICS_PATH, response_class=Response, responses={401: {"model": ErrorDetail}})
async def metrics_endpoint(metrics: Metrics) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
