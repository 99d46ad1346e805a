"""What the routes depend on: the app's pipeline, metrics and settings, the request's deadline and its options.

The pipeline is built by the app's lifespan and the settings and metrics by ``create_app``, all kept on
``app.state``; the deadline is stamped on ``request.state`` by device/deadline.py's StampDeadline. The
options are the classify routes' query parameters as one ClassifyOptions; the device's settings fill in
what a request leaves out in one place, SplitPipeline.classify.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from ..deadline import Deadline
from ..metrics import DeviceMetrics
from ..model_set import ARCH_HELP, SPLIT_POINT_HELP
from ..pipeline import ClassifyOptions, SplitPipeline
from ..settings import DeviceSettings


# async, though they do not await: FastAPI runs a plain def dependency on its thread pool, a thread hop per request
async def get_pipeline(request: Request) -> SplitPipeline:
    return request.app.state.pipeline


async def get_metrics(request: Request) -> DeviceMetrics:
    return request.app.state.metrics


async def get_settings(request: Request) -> DeviceSettings:
    return request.app.state.settings


async def get_deadline(request: Request) -> Deadline:
    return request.state.deadline


Pipeline = Annotated[SplitPipeline, Depends(get_pipeline)]
Metrics = Annotated[DeviceMetrics, Depends(get_metrics)]
Settings = Annotated[DeviceSettings, Depends(get_settings)]
RequestDeadline = Annotated[Deadline, Depends(get_deadline)]

SplitPointQuery = Annotated[str | None, Query(description=SPLIT_POINT_HELP)]
ArchQuery = Annotated[str | None, Query(description=ARCH_HELP)]


async def classify_options(
    logits: Annotated[bool, Query(description="also return the raw logits")] = False,
    spikes: Annotated[
        bool,
        Query(
            description="also return the transmitted spike tensor, bit-packed and base64-encoded "
            "(the response's spikes field)"
        ),
    ] = False,
    split_point: SplitPointQuery = None,
    arch: ArchQuery = None,
    stream: Annotated[
        bool | None,
        Query(
            description="send the spikes one time step per message as the head makes "
            "them (InferStream); false: one message, and no early exit "
            "unless early_exit is given (default: SBN_DEVICE_STREAM)"
        ),
    ] = None,
    early_exit: Annotated[
        float | None,
        Query(
            ge=0,
            le=1,
            description="stream, and stop at the first time step whose running logits give a class at least "
            "this softmax probability; 0: no early exit (default: SBN_DEVICE_EARLY_EXIT, off)",
        ),
    ] = None,
) -> ClassifyOptions:
    """``POST /classify``'s query parameters."""
    return ClassifyOptions(arch, split_point, logits, spikes, stream, early_exit)


async def batch_options(
    logits: Annotated[bool, Query(description="also return each image's raw logits")] = False,
    spikes: Annotated[
        bool,
        Query(
            description="also return each image's transmitted spikes, bit-packed and base64-encoded (its spikes field)"
        ),
    ] = False,
    split_point: SplitPointQuery = None,
    arch: ArchQuery = None,
) -> ClassifyOptions:
    """``POST /classify/batch``'s query parameters: a batch crosses in one frame, never streamed."""
    return ClassifyOptions(arch, split_point, logits, spikes, stream=False)


ClassifyQuery = Annotated[ClassifyOptions, Depends(classify_options)]
BatchQuery = Annotated[ClassifyOptions, Depends(batch_options)]
