"""``sbn device``: the device half behind an HTTP API.

    POST /classify   image upload -> head + encoder (here) -> spikes over gRPC -> edge -> logits -> JSON
                     (?stream=true / ?early_exit=p: one time step per message, device/streaming.py)
    POST /classify/batch  several images -> one head batch -> one frame -> one entry per image (device/batch.py)
    GET  /healthz    the process is up
    GET  /readyz     the edge is reachable and serves the same model (else 503)
    GET  /metrics    Prometheus metrics
    GET  /docs       OpenAPI documentation (Swagger UI; /redoc: ReDoc), from local assets: works offline
    GET  /           a web page: upload or draw a digit, see the answer, the bytes, energy and spikes

With ``api_key`` set, /classify, /classify/batch and /metrics answer 401 without it in the X-API-Key header; the
probes stay open, as orchestrators call them without credentials, and so do the docs and the page
(which asks for the key and sends it in the header). The edge's address is internal: no error body
names it (it is logged instead), and /readyz shows it only to a request carrying the key.

Routes only translate between HTTP and the pipeline; failures travel as typed exceptions and are
turned into ``{"detail": "..."}`` responses by the handlers registered in ``create_app``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.preprocess import ImageError, ImageTooLarge
from spikebottlenet.shared.settings import add_settings_arguments, configure_torch_threads, settings_from_args

from .api_key import ApiKeyRequired, carries_key
from .batch import BATCH_PATH, add_batch_api, one_file_only, upload_field_detail
from .classification import Classification
from .deadline import StampDeadline
from .edge_client import EdgeClient, EdgeError, EdgeModelMismatch, EdgeTimeout, EdgeUnavailable, channel_credentials
from .edge_replicas import TargetError
from .head_batcher import HeadQueueFull, HeadTimeout
from .head_runner import HeadRunner
from .head_set import ARCH_HELP, SPLIT_POINT_HELP, UnknownModel
from .http_server import DeviceServer, server_options
from .planner import NoEligibleSplit
from .metrics import CLASSIFY_PATH, CountClassifyResponses, DeviceMetrics
from .pipeline import SplitPipeline
from .settings import DeviceSettings
from .upload_limit import UploadLimit
from .web import add_offline_docs, add_web_page

log = logging.getLogger("sbn.device")

# Typed failures -> HTTP status. Starlette picks the handler of the closest class in the exception's
# MRO, so EdgeError covers EdgeRejected and any other edge failure.
ERROR_STATUS: dict[type[Exception], int] = {
    ImageError: status.HTTP_400_BAD_REQUEST,  # empty, truncated, not an image
    ImageTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,  # decoded size over max_decoded_bytes (a decompression bomb)
    UnknownModel: status.HTTP_422_UNPROCESSABLE_CONTENT,  # a split point or arch this device holds no head for
    NoEligibleSplit: status.HTTP_422_UNPROCESSABLE_CONTENT,  # auto: nothing within the accuracy-drop budget
    HeadQueueFull: status.HTTP_503_SERVICE_UNAVAILABLE,  # this device is overloaded: retry later
    HeadTimeout: status.HTTP_504_GATEWAY_TIMEOUT,  # the deadline passed waiting for the head
    EdgeUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,  # down, TLS refused, busy or cancelled: retry later
    EdgeTimeout: status.HTTP_504_GATEWAY_TIMEOUT,  # no answer within the deadline
    EdgeModelMismatch: status.HTTP_502_BAD_GATEWAY,  # edge and device run different checkpoints
    EdgeError: status.HTTP_502_BAD_GATEWAY,  # the edge refused the frame, failed on it, or sent a reply that does
}                                            # not fit it (EdgeRejected, EdgeBadReply): the message names which
# A 503 says when to try again: the queues it stands for drain within about a second under any load the
# limits admit.
RETRY_AFTER_S = 1
# How gRPC names the peers it tried in its error details (ipv4:10.0.0.5:50051, ipv6:[::1]:50051, unix:/path), and
# bare IPv4 or bracketed IPv6 addresses: withheld from HTTP answers, with every form of the configured target
PEER_ADDRESS = re.compile(r"\b(?:ipv4|ipv6|unix|unix-abstract|vsock|dns):\S+?(?=[\s,;]|: |$)"
                          r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?|\[[0-9A-Fa-f:.]+\](?::\d+)?")
GRPC_SCHEMES = ("dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock")
WITHHELD = "<edge address>"


class ErrorDetail(BaseModel):
    detail: str


class Liveness(BaseModel):
    status: str = "alive"


class HeadReadiness(BaseModel):
    arch: str
    split_point: int
    split_point_name: str
    model_fingerprint: str
    edge_serves: bool = Field(description="the edge serves this head's tail; if not, requests for it get 502")
    edge_ms: float | None = Field(description="the edge's time per image for this model, as the planner sees it")


class Readiness(BaseModel):
    status: str = "ready"
    edge: str | None = Field(default=None, description="the edge's gRPC target; only with the API key")
    model_fingerprint: str = Field(description="the default model's")
    arch: str = Field(description="the default model's backbone")
    split_point: int = Field(description="the default model's k: the bottleneck follows the backbone's k-th block")
    split_point_name: str = Field(description="the block's name, e.g. RB8 or IRB8")
    heads: list[HeadReadiness] = Field(description="every head this device holds, the default first")
    edge_replicas: int | None = Field(
        default=None, description="edge replicas that answer, of the addresses the edge target resolves to now (the "
                                  "device's calls take turns over them); none where the target cannot be listed")
    edge_addresses: list[str] | None = Field(default=None, description="those addresses; only with the API key")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorDetail} for code in (400, 401, 408, 413, 422, 502, 503, 504)}
METRICS_PATH = "/metrics"

router = APIRouter()


# async, though they do not await: FastAPI runs a plain def dependency on its thread pool, a thread hop per request
async def get_pipeline(request: Request) -> SplitPipeline:
    return request.app.state.pipeline


async def get_metrics(request: Request) -> DeviceMetrics:
    return request.app.state.metrics


Pipeline = Annotated[SplitPipeline, Depends(get_pipeline)]
Metrics = Annotated[DeviceMetrics, Depends(get_metrics)]


@router.post(CLASSIFY_PATH, response_model_exclude_none=True, responses=ERROR_RESPONSES,
             dependencies=[Depends(one_file_only)])  # several `file` fields: 422 naming POST /classify/batch
async def classify(
    request: Request,
    file: Annotated[UploadFile, File(description="the image (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM)")],
    pipeline: Pipeline,
    metrics: Metrics,
    logits: Annotated[bool, Query(description="also return the raw logits")] = False,
    spikes: Annotated[bool, Query(description="also return the transmitted spike tensor, bit-packed and base64-encoded "
                                              "(the response's spikes field)")] = False,
    split_point: Annotated[str | None, Query(description=SPLIT_POINT_HELP)] = None,
    arch: Annotated[str | None, Query(description=ARCH_HELP)] = None,
    stream: Annotated[bool | None, Query(description="send the spikes one time step per message as the head makes "
                                                     "them (InferStream); false: one message, and no early exit "
                                                     "unless early_exit is given (default: SBN_DEVICE_STREAM)")] = None,
    early_exit: Annotated[float | None, Query(
        ge=0, le=1, description="stream, and stop at the first time step whose running logits give a class at least "
                                "this softmax probability; 0: no early exit (default: SBN_DEVICE_EARLY_EXIT, off)")] = None,
) -> Classification:
    """Classify one image on the split model: head and spike encoder here, the rest on the edge."""
    settings = pipeline.settings
    if early_exit is None:  # the setting's, unless the request asks for one message
        early_exit = None if stream is False else settings.early_exit
    result = await pipeline.classify(await file.read(), request.state.deadline, arch, split_point,
                                     include_logits=logits, include_spikes=spikes,
                                     stream=settings.stream if stream is None else stream,
                                     early_exit=early_exit or None)
    metrics.observe(result)
    return result


@router.get("/healthz")
async def healthz() -> Liveness:
    return Liveness()


@router.get("/readyz", responses={503: {"model": ErrorDetail}})
async def readyz(request: Request, pipeline: Pipeline) -> Readiness:
    """Whether the edge serves this device's models. The edge's addresses only to a request with the API key (to
    none where no key is set): the probe is open to all."""
    edge = pipeline.edge.address
    try:
        await pipeline.check_edge()
    except EdgeError as e:
        log.warning("not ready: %s", e)
        detail = f"not ready: {withhold_address(str(e), edge)}"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from None
    try:
        addresses, answering = await pipeline.edge.replicas()
    except TargetError:
        addresses = answering = None
    key = pipeline.settings.api_key
    shown = key is not None and carries_key(request.scope, key.get_secret_value().encode())
    default = pipeline.heads.default.runner
    heads = [HeadReadiness(arch=h.key[0], split_point=h.key[1], split_point_name=h.runner.split_point.name,
                           model_fingerprint=h.runner.checkpoint.fingerprint, edge_serves=bool(h.edge_serves),
                           edge_ms=h.costs.edge_ms) for h in pipeline.heads.heads.values()]
    return Readiness(edge=edge if shown else None, model_fingerprint=default.checkpoint.fingerprint,
                     arch=default.checkpoint.config.backbone.arch, split_point=default.split_point.index,
                     split_point_name=default.split_point.name, heads=heads,
                     edge_replicas=None if answering is None else len(answering),
                     edge_addresses=addresses if shown else None)


@router.get(METRICS_PATH, response_class=Response, responses={401: {"model": ErrorDetail}})
async def metrics_endpoint(metrics: Metrics) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def address_forms(target: str) -> list[str]:
    """Every form in which messages may name the gRPC target ``target``, the longest first: the target, without its
    scheme (and a dns authority), each address of an ipv4:/ipv6: list, and each address's host. gRPC's own messages
    name a target it cannot resolve by host:port (``errors resolving edge:50051``), older resolvers by the bare host
    (``name=edge``)."""
    forms = {target}
    scheme, colon, rest = target.partition(":")
    if not colon or scheme not in GRPC_SCHEMES:  # no scheme gRPC knows: host:port, resolved by DNS
        scheme, rest = "dns", target
    forms.add(rest)
    if rest.startswith("//"):  # dns://[authority]/host:port, unix://absolute-path
        rest = rest[2:]
        if scheme == "dns":
            authority, _, rest = rest.partition("/")
            forms.add(authority)
        forms.add(rest)
    for address in rest.split(",") if scheme in ("ipv4", "ipv6") else [rest]:
        forms.add(address)
        if address.startswith("["):  # [v6]:port
            forms.update((address[:address.find("]") + 1], address[1:address.find("]")]))
        elif address.count(":") == 1:  # host:port (more colons: a bare IPv6 address)
            forms.add(address.rpartition(":")[0])
    return sorted(filter(None, forms), key=lambda form: (-len(form), form))


@functools.lru_cache(maxsize=8)
def _address_patterns(target: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """How the device's own messages name the edge (``edge at <target>``, ``the edge at <target>``), and what is
    withheld: every form of ``target``, each only as a whole name (``edge`` in ``edge:50051`` or ``(edge)``, not in
    ``edge-2``, ``edges`` or ``edge.internal``; in any case, as host names are), and every PEER_ADDRESS. One pattern,
    so that each address is withheld once, whole: ``ipv4:10.0.0.7:50051`` by PEER_ADDRESS, not its tail by the
    target's host:port."""
    whole = r"(?![\w-]|\.\w)"
    ours = re.compile(rf"(?:the )?edge at {re.escape(target)}{whole}")
    names = "|".join(map(re.escape, address_forms(target)))
    return ours, re.compile(rf"(?<![\w.-])(?:{names}){whole}|{PEER_ADDRESS.pattern}", re.IGNORECASE)


def withhold_address(detail: str, edge_address: str) -> str:
    """``detail`` without the edge's address: every form of the configured target, and every peer address gRPC
    names. The device's own messages that name the edge by its target say "the edge" instead, kept as it is
    whatever the target's host is called (Compose's is ``edge``: elsewhere that word is withheld too)."""
    ours, addresses = _address_patterns(edge_address)
    return "the edge".join(addresses.sub(WITHHELD, part) for part in ours.split(detail))


def _detail_response(status_code: int, edge_address: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status_code == status.HTTP_503_SERVICE_UNAVAILABLE else None

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if status_code >= 500:  # the whole message, the edge's address included, to the log only
            log.warning("%s %s -> %d after %.3f s: %s", request.method, request.url.path, status_code,
                        request.state.deadline.elapsed(), exc)
        return JSONResponse({"detail": withhold_address(str(exc), edge_address)}, status_code=status_code,
                            headers=headers)

    return handler


def create_app(settings: DeviceSettings) -> FastAPI:
    """The device app; raises SpikeBottleNetError or OSError for a checkpoint or TLS file it cannot use.

    The head is loaded and the TLS files are read here, so that a bad file fails before the port
    opens; the edge channel is opened by the app's lifespan.
    """
    heads = [HeadRunner.load(path, settings.codec, settings.energy_mode, settings.entropy_chunks,
                             settings.fec_parity_bytes) for path in settings.checkpoint_paths()]
    for head in heads:
        head.warm_up()  # before the port opens, so the first upload does not spend its deadline on set-up
    credentials = channel_credentials(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with EdgeClient(settings.edge_address, settings.deadline_s, settings.max_edge_calls, credentials,
                              settings.tls_server_name, settings.edge_keepalive_s,
                              settings.edge_keepalive_timeout_s) as edge:
            pipeline = SplitPipeline(heads, edge, settings, metrics)
            await pipeline.start()
            app.state.pipeline = pipeline
            for head in heads:
                checkpoint = head.checkpoint
                log.info("head up to %s of %s model %s (%s) ready", head.split_point.name,
                         checkpoint.config.backbone.arch, checkpoint.fingerprint[:12],
                         "trained" if checkpoint.trained else "untrained")
            log.info("edge at %s (%s), codec %s, link %s", settings.edge_address,
                     "plaintext" if credentials is None else "TLS", settings.codec, settings.prior_link())
            try:
                yield
            finally:
                await pipeline.close()

    app = FastAPI(title="SpikeBottleNet device", lifespan=lifespan,
                  description="Split spiking inference: the head runs here, the tail on the edge.",
                  docs_url=None, redoc_url=None)  # CDN-based: add_offline_docs serves them from local files
    metrics = DeviceMetrics()
    app.state.metrics = metrics
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    if settings.api_key is not None:  # outside the upload limit: no key, no byte of the body read
        app.add_middleware(ApiKeyRequired, key=settings.api_key.get_secret_value(),
                           paths=(CLASSIFY_PATH, BATCH_PATH, METRICS_PATH))
    # around all of the above: its deadline bounds them, and its answers at the deadline are counted
    app.add_middleware(StampDeadline, budget_s=settings.deadline_s, max_arriving=settings.max_arriving_uploads,
                       retry_after_s=RETRY_AFTER_S)
    app.add_middleware(CountClassifyResponses, metrics=metrics)
    app.include_router(router)
    add_batch_api(app, settings, ERROR_RESPONSES)
    add_offline_docs(app)
    add_web_page(app, api_key_required=settings.api_key is not None)
    for error, status_code in ERROR_STATUS.items():
        app.add_exception_handler(error, _detail_response(status_code, settings.edge_address))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default lists each problem as an object; this API's errors are one readable string.
        problems = upload_field_detail(request.url.path, exc) or "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: uvicorn logs the traceback, the client still gets JSON.
        return JSONResponse({"detail": "internal error; see the device's log"},
                            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, DeviceSettings)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_from_args(DeviceSettings, args)
    configure_torch_threads(settings.threads)
    try:  # a missing, damaged or foreign file is worth one clear line, not a traceback
        app = create_app(settings)
    except (SpikeBottleNetError, OSError) as e:  # CheckpointError, a checkpoint without a bottleneck, a TLS file
        log.error("cannot start the device: %s", e)
        return 1
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, finishes in-flight requests, then runs the
    # lifespan's exit (closing the channel and the head's thread).
    server = DeviceServer(uvicorn.Config(app, log_level="info", **server_options(settings)))
    server.run()
    return 0 if server.started else STARTUP_FAILURE  # stopped during start-up, as uvicorn.run exits then
