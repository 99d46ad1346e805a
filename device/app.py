"""``sbn device``: the device half behind an HTTP API.

    POST /classify   image upload -> head + encoder (here) -> spikes over gRPC -> edge -> logits -> JSON
                     (?stream=true / ?early_exit=p: one time step per message, device/streaming.py)
                     (device/api/classify.py)
    POST /classify/batch  several images -> one head batch -> one frame -> one entry per image
                     (device/api/batch.py)
    GET  /healthz    the process is up (device/api/probes.py, as the next two)
    GET  /readyz     the edge is reachable and serves the same model (else 503)
    GET  /metrics    Prometheus metrics
    GET  /docs       OpenAPI documentation (Swagger UI; /redoc: ReDoc), from local assets: works offline
    GET  /           a web page: upload or draw a digit, see the answer, the bytes, energy and spikes

With ``api_key`` set, /classify, /classify/batch and /metrics answer 401 without it in the X-API-Key header; the
probes stay open, as orchestrators call them without credentials, and so do the docs and the page
(which asks for the key and sends it in the header). The edge's address is internal: no error body
names it (it is logged instead), and /readyz shows it only to a request carrying the key.

The routes (device/api/) only translate between HTTP and the pipeline (device/pipeline.py); failures
travel as typed exceptions and are turned into ``{"detail": "..."}`` responses by the handlers
registered in ``create_app``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from uvicorn.config import STARTUP_FAILURE

from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.preprocess import ImageError, ImageTooLarge
from spikebottlenet.shared.settings import add_settings_arguments, settings_from_args

from .api import batch, classify, probes
from .api.batch import BATCH_PATH, TooManyFiles, UnsupportedOption
from .api.classify import AmbiguousUpload, MissingUpload, upload_field_detail
from .api.errors import withhold_address
from .api.probes import METRICS_PATH
from .api_key import ApiKeyRequired
from .deadline import StampDeadline
from .edge_client import EdgeClient, EdgeError, EdgeModelMismatch, EdgeTimeout, EdgeUnavailable, channel_credentials
from .head_queue import HeadQueueFull, HeadTimeout
from .head_runner import HeadRunner, StreamingUnsupported
from .http_server import DeviceServer, server_options
from .metrics import CLASSIFY_PATH, CountClassifyResponses, DeviceMetrics
from .model_set import UnknownModel
from .pipeline import SplitPipeline
from .planner import NoEligibleSplit
from .settings import DeviceSettings
from .upload_limit import UploadLimit
from .web import add_offline_docs, add_web_page

log = logging.getLogger("sbn.device")

# Typed failures -> HTTP status. Starlette picks the handler of the closest class in the exception's
# MRO, so EdgeError covers EdgeRejected and any other edge failure.
ERROR_STATUS: dict[type[Exception], int] = {
    ImageError: status.HTTP_400_BAD_REQUEST,  # empty, truncated, not an image
    ImageTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,  # decoded size over max_decoded_bytes (a decompression bomb)
    TooManyFiles: status.HTTP_413_CONTENT_TOO_LARGE,  # a batch of more than max_batch images
    AmbiguousUpload: status.HTTP_422_UNPROCESSABLE_CONTENT,  # several file fields to POST /classify
    MissingUpload: status.HTTP_422_UNPROCESSABLE_CONTENT,  # neither a file field nor an image/* body
    UnsupportedOption: status.HTTP_422_UNPROCESSABLE_CONTENT,  # stream or early_exit to POST /classify/batch
    StreamingUnsupported: status.HTTP_422_UNPROCESSABLE_CONTENT,  # stream or early_exit to a head run by onnx
    UnknownModel: status.HTTP_422_UNPROCESSABLE_CONTENT,  # a split point or arch this device holds no head for
    NoEligibleSplit: status.HTTP_422_UNPROCESSABLE_CONTENT,  # auto: nothing within the accuracy-drop budget
    HeadQueueFull: status.HTTP_503_SERVICE_UNAVAILABLE,  # this device is overloaded: retry later
    HeadTimeout: status.HTTP_504_GATEWAY_TIMEOUT,  # the deadline passed waiting for the head
    EdgeUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,  # down, TLS refused, busy or cancelled: retry later
    EdgeTimeout: status.HTTP_504_GATEWAY_TIMEOUT,  # no answer within the deadline
    EdgeModelMismatch: status.HTTP_502_BAD_GATEWAY,  # edge and device run different checkpoints
    EdgeError: status.HTTP_502_BAD_GATEWAY,  # the edge refused the frame, failed on it, or sent a reply that does
}  # not fit it (EdgeRejected, EdgeBadReply): the message names which
# A 503 says when to try again: the queues it stands for drain within about a second under any load the
# limits admit.
RETRY_AFTER_S = 1


def _detail_response(status_code: int, edge_address: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status_code == status.HTTP_503_SERVICE_UNAVAILABLE else None

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if status_code >= 500:  # the whole message, the edge's address included, to the log only
            log.warning(
                "%s %s -> %d after %.3f s: %s",
                request.method,
                request.url.path,
                status_code,
                request.state.deadline.elapsed(),
                exc,
            )
        return JSONResponse(
            {"detail": withhold_address(str(exc), edge_address)}, status_code=status_code, headers=headers
        )

    return handler


def create_app(settings: DeviceSettings) -> FastAPI:
    """The device app; raises SpikeBottleNetError or OSError for a checkpoint or TLS file it cannot use.

    The head is loaded and the TLS files are read here, so that a bad file fails before the port
    opens; the edge channel is opened by the app's lifespan.
    """
    heads = [
        HeadRunner.load(
            path,
            settings.codec,
            settings.energy_mode,
            settings.entropy_chunks,
            settings.fec_parity_bytes,
            settings.runtime,
            settings.threads,
        )
        for path in settings.checkpoint_paths()
    ]
    for head in heads:
        head.warm_up()  # before the port opens, so the first upload does not spend its deadline on set-up
    credentials = channel_credentials(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with EdgeClient(
            settings.edge_address,
            settings.deadline_s,
            settings.max_edge_calls,
            credentials,
            settings.tls_server_name,
            settings.edge_keepalive_s,
            settings.edge_keepalive_timeout_s,
        ) as edge:
            pipeline = SplitPipeline(heads, edge, settings, metrics)
            await pipeline.start()
            app.state.pipeline = pipeline
            for head in heads:
                checkpoint = head.checkpoint
                log.info(
                    "head up to %s of %s model %s (%s) ready",
                    head.split_point.name,
                    checkpoint.config.backbone.arch,
                    checkpoint.fingerprint[:12],
                    "trained" if checkpoint.trained else "untrained",
                )
            log.info(
                "edge at %s (%s), codec %s, link %s",
                settings.edge_address,
                "plaintext" if credentials is None else "TLS",
                settings.codec,
                settings.prior_link(),
            )
            try:
                yield
            finally:
                await pipeline.close()

    app = FastAPI(
        title="SpikeBottleNet device",
        lifespan=lifespan,
        description="Split spiking inference: the head runs here, the tail on the edge.",
        docs_url=None,
        redoc_url=None,
    )  # CDN-based: add_offline_docs serves them from local files
    metrics = DeviceMetrics()
    app.state.settings, app.state.metrics = settings, metrics
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    if settings.api_key is not None:  # outside the upload limit: no key, no byte of the body read
        app.add_middleware(
            ApiKeyRequired, key=settings.api_key.get_secret_value(), paths=(CLASSIFY_PATH, BATCH_PATH, METRICS_PATH)
        )
    # around all of the above: its deadline bounds them, and its answers at the deadline are counted
    app.add_middleware(
        StampDeadline,
        budget_s=settings.deadline_s,
        max_arriving=settings.max_arriving_uploads,
        retry_after_s=RETRY_AFTER_S,
    )
    app.add_middleware(CountClassifyResponses, metrics=metrics)
    for api in (classify, probes, batch):
        app.include_router(api.router)
    add_offline_docs(app)
    add_web_page(app, api_key_required=settings.api_key is not None)
    for error, status_code in ERROR_STATUS.items():
        app.add_exception_handler(error, _detail_response(status_code, settings.edge_address))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default lists each problem as an object; this API's errors are one readable string.
        problems = upload_field_detail(request.url.path, exc) or "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse({"detail": problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: uvicorn logs the traceback, the client still gets JSON.
        return JSONResponse(
            {"detail": "internal error; see the device's log"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
        )

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, DeviceSettings)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_from_args(DeviceSettings, args)
    if settings.runtime == "torch":  # the onnx runtime sizes its own session's pools (device/onnx_head_engine.py)
        from spikebottlenet.shared.torch_runtime import configure_torch_threads

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
