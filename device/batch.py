"""``POST /classify/batch``: several images through the head as one batch, to the edge in one frame.

    files (multipart, one ``files`` field per image, at most ``max_batch``)
      -> each decoded and preprocessed (device/decoder.py); one that cannot be read becomes an error entry
         (one over the decoded-size budget too: SBN_DEVICE_MAX_DECODED_BYTES), the rest go on
      -> one head forward over the batch [B, 3, H, W] -> spikes [T, B, C', H', W']
      -> one SpikeFrame of shape T x B x C' x H' x W' (one payload, one codec) -> one Infer call
      -> logits [B, num_classes] -> one entry per uploaded file, in upload order

Each classified entry is a ``Classification`` (the body of ``POST /classify``) plus ``index`` and
``filename``, with these per-image figures:

    energy              the image's own: ActivityMonitor counts spikes per image of the batch
    transmitted_bytes   the image's share of the frame's payload: the payload divided evenly among
                        the B images, in whole bytes, the first ``len % B`` getting one byte more, so
                        the shares add up to the payload exactly. With the raw codec each image owns
                        T*C'*H'*W' bits of it, and when that is a multiple of 8 (every shipped model)
                        the share is exactly what the image alone would send; a sparse payload is one
                        stream and cannot be attributed to images bit by bit, so it is split evenly.
    message_bytes       the same even share of the whole serialized frame (the envelope is paid once)
    compression_ratio   of the batch: B * (bytes of the split block's own spikes) / payload bytes
    codec               the frame's (with ``auto``, chosen once for the whole frame)
    latency_ms          the batch's: every image waits for the whole batch (decode of all images,
                        one head forward, one round trip), so each entry carries the same figures

A file that is not a readable image fails only its own entry: ``{index, filename, error}``. The
answer is 200 whenever the request itself was acceptable, even if every entry failed (then no frame
is sent and ``batch.frames`` is 0): statuses describe the request, entries describe the images. What
fails the single frame fails the whole request with the status ``POST /classify`` would answer
(503 edge down or busy, 504 deadline, 502 another model or a refused frame).

``stream`` and ``early_exit`` are ``POST /classify``'s alone (one image, one time step per message): a
batch crosses in one frame, so either is refused with 422 rather than ignored.
"""

from __future__ import annotations

from time import perf_counter
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import FormData

from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.rpc.wire import CODEC_FROM_WIRE

from .classification import Classification, Latency, LinkDamage, SplitChoice, build_classification
from .deadline import Deadline
from .head_set import ARCH_HELP, SPLIT_POINT_HELP, ServedHead
from .metrics import CLASSIFY_PATH, DeviceMetrics
from .pipeline import SplitPipeline
from .settings import DeviceSettings

BATCH_PATH = "/classify/batch"
SINGLE_FIELD = "file"  # the multipart field of POST /classify
BATCH_FIELD = "files"  # ... and of POST /classify/batch, repeated


class TooManyFiles(SpikeBottleNetError, ValueError):
    """More images in one batch request than ``max_batch``."""


class AmbiguousUpload(SpikeBottleNetError, ValueError):
    """Several ``file`` fields sent to ``POST /classify``, which classifies one image."""


class UnsupportedOption(SpikeBottleNetError, ValueError):
    """A ``POST /classify`` query parameter sent to ``POST /classify/batch``, which has no such option."""


# POST /classify's parameters that a batch, one frame for every image, cannot honour
SINGLE_IMAGE_OPTIONS = ("stream", "early_exit")


class BatchedClassification(Classification):
    """One classified image of a batch: the ``POST /classify`` body, its byte figures the image's share."""

    index: int = Field(description="position of the file among the request's files fields, from 0")
    filename: str | None = Field(default=None, description="the file name the upload gave, if any")


class BatchFailure(BaseModel):
    """One image of a batch that could not be classified; the others are unaffected."""

    index: int = Field(description="position of the file among the request's files fields, from 0")
    filename: str | None = Field(default=None, description="the file name the upload gave, if any")
    error: str = Field(description="why this image could not be read (the detail POST /classify would give)")


class BatchSummary(BaseModel):
    images: int = Field(description="files received")
    classified: int = Field(description="entries with a result: B, the frame's batch dimension")
    failed: int = Field(description="entries with an error")
    frames: int = Field(description="gRPC frames sent to the edge: 1, or 0 when no image could be read")
    frame_shape: list[int] | None = Field(default=None, description="T, B, C', H', W' of the frame sent")
    codec: str | None = Field(default=None, description="codec that packed the frame's payload: raw, sparse or entropy")
    transmitted_bytes: int = Field(description="the frame's spike payload, bytes (the entries' shares add up to it)")
    message_bytes: int = Field(description="the whole serialized frame, bytes (the entries' shares add up to it)")
    latency_ms: Latency = Field(description="the whole batch: decode of every image, head, edge, network")


class BatchResult(BaseModel):
    results: list[BatchedClassification | BatchFailure] = Field(
        description="one entry per uploaded file, in upload order: a classification, or {index, filename, error}")
    batch: BatchSummary


def even_shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` whole numbers that add up to it, the first ``total % parts`` one larger."""
    share, extra = divmod(total, parts)
    return [share + (i < extra) for i in range(parts)]


async def classify_batch(pipeline: SplitPipeline, uploads: list[tuple[str | None, bytes]], deadline: Deadline,
                         served: ServedHead, include_logits: bool = False, include_spikes: bool = False,
                         split_choice: SplitChoice | None = None) -> BatchResult:
    """One entry per ``(filename, image bytes)``, through ``served``; raises HeadQueueFull / HeadTimeout when the
    head cannot take the batch in time, and EdgeError when the edge returns no logits for the frame."""
    start = perf_counter()
    head = served.runner
    decoded = await pipeline.decode(served, [image for _, image in uploads], deadline)
    entries: list[BatchedClassification | BatchFailure] = [
        BatchFailure(index=index, filename=uploads[index][0], error=str(error))
        for index, error in decoded.errors.items()]
    frame: pb.SpikeFrame | None = None
    if not decoded.inputs:  # nothing to run: no head, no frame
        latency = Latency(device=decoded.ms, total=(perf_counter() - start) * 1e3)
    else:
        queued = await pipeline.run_head(served, decoded.inputs, deadline)
        batch = queued.batch
        frame = batch.frame
        reply = await pipeline.ask_edge(served, frame, deadline)  # checked: one row of logits per image of the frame
        latency = Latency(device=decoded.ms + batch.timings.total_ms, queue=queued.queue_ms, edge=reply.edge_ms,
                          network=reply.round_trip_ms - reply.edge_ms, total=(perf_counter() - start) * 1e3)
        images = len(batch.heads)
        payload_shares = even_shares(len(frame.payload), images)
        message_shares = even_shares(frame.ByteSize(), images)
        ratio = images * head.checkpoint.config.geometry().uncompressed_bytes / len(frame.payload)
        link = pipeline.link.prior  # the configured radio: see Energy.transmit_mj
        for b, (index, output) in enumerate(sorted(batch.heads.items())):
            single = build_classification(reply.logits[b], output, head.checkpoint, latency, include_logits,
                                          include_spikes, head_batch_images=batch.run_images,
                                          edge_batch_images=reply.edge_batch_images,
                                          transmit_mj=link.transmit_mj(message_shares[b]), split_choice=split_choice,
                                          link_damage=LinkDamage.of(frame, reply.damage),
                                          edge_replica=reply.served_by or None)
            entries.append(BatchedClassification(
                **{**dict(single), "transmitted_bytes": payload_shares[b], "message_bytes": message_shares[b],
                   "compression_ratio": ratio},
                index=index, filename=uploads[index][0]))
    entries.sort(key=lambda entry: entry.index)
    summary = BatchSummary(
        images=len(uploads), classified=len(decoded.inputs), failed=len(decoded.errors), frames=int(frame is not None),
        frame_shape=None if frame is None else list(frame.shape),
        codec=None if frame is None else CODEC_FROM_WIRE[frame.codec].value,
        transmitted_bytes=0 if frame is None else len(frame.payload),
        message_bytes=0 if frame is None else frame.ByteSize(), latency_ms=latency)
    return BatchResult(results=entries, batch=summary)


async def classify_batch_route(
    request: Request,
    files: Annotated[list[UploadFile], File(description="the images, one files field each (at most max_batch)")],
    logits: Annotated[bool, Query(description="also return each image's raw logits")] = False,
    spikes: Annotated[bool, Query(description="also return each image's transmitted spikes, bit-packed and "
                                              "base64-encoded (its spikes field)")] = False,
    split_point: Annotated[str | None, Query(description=SPLIT_POINT_HELP)] = None,
    arch: Annotated[str | None, Query(description=ARCH_HELP)] = None,
) -> BatchResult:
    """Classify several images as one batch: one head forward, one frame to the edge, one entry per file.

    An unreadable image fails only its own entry (it carries ``error``); byte figures are each image's
    share of the frame, energy is each image's own.
    """
    max_batch: int = request.app.state.max_batch
    if len(files) > max_batch:
        raise TooManyFiles(f"{len(files)} files in one batch; this device takes at most {max_batch} per request "
                           f"(SBN_DEVICE_MAX_BATCH): send them in several requests")
    uploads = [(upload.filename, await upload.read()) for upload in files]
    pipeline: SplitPipeline = request.app.state.pipeline
    served, choice = await pipeline.choose(arch, split_point, request.state.deadline)
    result = await classify_batch(pipeline, uploads, request.state.deadline, served, logits, spikes, choice)
    metrics: DeviceMetrics = request.app.state.metrics
    for entry in result.results:
        if isinstance(entry, BatchedClassification):
            metrics.observe(entry)
    return result


async def no_single_image_options(request: Request) -> None:
    """Dependency of ``POST /classify/batch``: ``stream`` or ``early_exit`` is refused rather than ignored."""
    sent = [name for name in SINGLE_IMAGE_OPTIONS if name in request.query_params]
    if sent:
        raise UnsupportedOption(f"{' and '.join(sent)}: POST {BATCH_PATH} sends every image in one frame and answers "
                                f"once; streaming one time step per message (and early exit) is POST "
                                f"{CLASSIFY_PATH}'s, one image per request")


async def one_file_only(request: Request) -> None:
    """Dependency of ``POST /classify``: several ``file`` fields are refused rather than all but one ignored."""
    count = len((await request.form()).getlist(SINGLE_FIELD))  # the form FastAPI already parsed
    if count > 1:
        raise AmbiguousUpload(f"{count} {SINGLE_FIELD} fields: POST /classify classifies one image; send several "
                              f"images to POST {BATCH_PATH}, one {BATCH_FIELD} field each")


def upload_field_detail(path: str, exc: RequestValidationError) -> str | None:
    """A message naming the right multipart field when a classify request lacks it; None for other problems."""
    field = {CLASSIFY_PATH: SINGLE_FIELD, BATCH_PATH: BATCH_FIELD}.get(path)
    problems = [e for e in exc.errors() if tuple(e["loc"]) == ("body", field)]
    if field is None or not problems:
        return None
    body = exc.body
    sent = list(dict.fromkeys(body.keys())) if isinstance(body, FormData) else []
    has = (f"this request's form has {', '.join(f'`{name}`' for name in sent)}" if sent
           else "this request has no multipart form fields")
    if field == SINGLE_FIELD:
        usage = (f"POST {CLASSIFY_PATH} needs the image as a file in the multipart form field named `{field}` "
                 f"(required; curl -F {field}=@image.png); {has}. Several images: POST {BATCH_PATH}, one "
                 f"`{BATCH_FIELD}` field each")
    else:
        usage = (f"POST {BATCH_PATH} needs the images as files in multipart form fields named `{field}`, one "
                 f"each (required; curl -F {field}=@a.png -F {field}=@b.png); {has}. One image: POST "
                 f"{CLASSIFY_PATH} with a `{SINGLE_FIELD}` field")
    if all(e["type"] == "missing" for e in problems):
        return usage
    return f"`{field}` must be a file upload, not a text value: {usage}"


def _detail(status_code: int) -> Any:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_code)

    return handler


def add_batch_api(app: FastAPI, settings: DeviceSettings, error_responses: dict[int | str, dict[str, Any]]) -> None:
    """``POST /classify/batch`` and the refusals of this module's errors (``error_responses``: for the OpenAPI)."""
    app.state.max_batch = settings.max_batch
    app.add_api_route(BATCH_PATH, classify_batch_route, methods=["POST"], response_model_exclude_none=True,
                      responses=error_responses, dependencies=[Depends(no_single_image_options)])
    app.add_exception_handler(TooManyFiles, _detail(status.HTTP_413_CONTENT_TOO_LARGE))
    for error in (AmbiguousUpload, UnsupportedOption):
        app.add_exception_handler(error, _detail(status.HTTP_422_UNPROCESSABLE_CONTENT))
