"""``POST /classify/batch``: several images through the head as one batch, to the edge in one frame.

    files (multipart, one ``files`` field per image, at most ``max_batch``)
      -> each decoded and preprocessed (device/decoder.py); one that cannot be read becomes an error entry
         (one over the decoded-size budget too: SBN_DEVICE_MAX_DECODED_BYTES), the rest go on
      -> one head forward over the batch [B, 3, H, W] -> spikes [T, B, C', H', W']
      -> one SpikeFrame of shape T x B x C' x H' x W' (one payload, one codec) -> one Infer call
      -> logits [B, num_classes] -> one entry per uploaded file, in upload order

Each classified entry is a ``Classification`` (the body of ``POST /classify``) plus ``index`` and
``filename``, with these per-image figures (device/classification.py, WireShare.of_frame):

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

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from pydantic import BaseModel, Field

from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.rpc.wire import CODEC_FROM_WIRE

from ..classification import Classification, Latency
from ..metrics import CLASSIFY_PATH
from ..pipeline import Classified
from .deps import BatchQuery, Metrics, Pipeline, RequestDeadline, Settings
from .errors import ERROR_RESPONSES

BATCH_PATH = "/classify/batch"
BATCH_FIELD = "files"  # its multipart field, repeated
# POST /classify's parameters that a batch, one frame for every image, cannot honour
SINGLE_IMAGE_OPTIONS = ("stream", "early_exit")


class TooManyFiles(SpikeBottleNetError, ValueError):
    """More images in one batch request than ``max_batch``."""


class UnsupportedOption(SpikeBottleNetError, ValueError):
    """A ``POST /classify`` query parameter sent to ``POST /classify/batch``, which has no such option."""


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
        description="one entry per uploaded file, in upload order: a classification, or {index, filename, error}"
    )
    batch: BatchSummary

    @classmethod
    def of(
        cls,
        classified: Classified,
        filenames: list[str | None],
        include_logits: bool = False,
        include_spikes: bool = False,
    ) -> BatchResult:
        """The body for the request's images (``filenames``: the uploads', in order)."""
        entries: dict[int, BatchedClassification | BatchFailure] = {
            index: BatchedClassification.build(
                result, include_logits, include_spikes, index=index, filename=filenames[index]
            )
            for index, result in classified.results.items()
        }
        entries |= {
            index: BatchFailure(index=index, filename=filenames[index], error=str(error))
            for index, error in classified.errors.items()
        }
        frame = classified.frame
        summary = BatchSummary(
            images=len(filenames),
            classified=len(classified.results),
            failed=len(classified.errors),
            frames=int(frame is not None),
            frame_shape=None if frame is None else list(frame.shape),
            codec=None if frame is None else CODEC_FROM_WIRE[frame.codec].value,
            transmitted_bytes=0 if frame is None else len(frame.payload),
            message_bytes=0 if frame is None else frame.ByteSize(),
            latency_ms=classified.latency,
        )
        return cls(results=[entries[index] for index in sorted(entries)], batch=summary)


async def no_single_image_options(request: Request) -> None:
    """Dependency of ``POST /classify/batch``: ``stream`` or ``early_exit`` is refused rather than ignored."""
    sent = [name for name in SINGLE_IMAGE_OPTIONS if name in request.query_params]
    if sent:
        raise UnsupportedOption(
            f"{' and '.join(sent)}: POST {BATCH_PATH} sends every image in one frame and answers "
            f"once; streaming one time step per message (and early exit) is POST "
            f"{CLASSIFY_PATH}'s, one image per request"
        )


router = APIRouter()


@router.post(
    BATCH_PATH,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(no_single_image_options)],
)
async def classify_batch_route(  # the name is the OpenAPI operation's: kept for clients generated from it
    files: Annotated[list[UploadFile], File(description="the images, one files field each (at most max_batch)")],
    options: BatchQuery,
    pipeline: Pipeline,
    metrics: Metrics,
    settings: Settings,
    deadline: RequestDeadline,
) -> BatchResult:
    """Classify several images as one batch: one head forward, one frame to the edge, one entry per file.

    An unreadable image fails only its own entry (it carries ``error``); byte figures are each image's
    share of the frame, energy is each image's own.
    """
    if len(files) > settings.max_batch:
        raise TooManyFiles(
            f"{len(files)} files in one batch; this device takes at most {settings.max_batch} per "
            f"request (SBN_DEVICE_MAX_BATCH): send them in several requests"
        )
    images = [await upload.read() for upload in files]
    classified = await pipeline.classify(images, options, deadline)
    result = BatchResult.of(classified, [upload.filename for upload in files], options.logits, options.spikes)
    for entry in result.results:
        if isinstance(entry, BatchedClassification):
            metrics.observe(entry)
    return result
