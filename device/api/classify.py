"""``POST /classify``: one image through the split model, and the refusals that name the right upload field.

file (multipart, one field) -> SplitPipeline.classify -> Classification (the JSON body)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import FormData

from spikebottlenet.shared.errors import SpikeBottleNetError

from ..classification import Classification
from ..metrics import CLASSIFY_PATH
from .batch import BATCH_FIELD, BATCH_PATH
from .deps import ClassifyQuery, Metrics, Pipeline, RequestDeadline
from .errors import ERROR_RESPONSES

SINGLE_FIELD = "file"  # the multipart field of POST /classify


class AmbiguousUpload(SpikeBottleNetError, ValueError):
    """Several ``file`` fields sent to ``POST /classify``, which classifies one image."""


async def one_file_only(request: Request) -> None:
    """Dependency of ``POST /classify``: several ``file`` fields are refused rather than all but one ignored."""
    count = len((await request.form()).getlist(SINGLE_FIELD))  # the form FastAPI already parsed
    if count > 1:
        raise AmbiguousUpload(
            f"{count} {SINGLE_FIELD} fields: POST /classify classifies one image; send several "
            f"images to POST {BATCH_PATH}, one {BATCH_FIELD} field each"
        )


router = APIRouter()


@router.post(
    CLASSIFY_PATH, response_model_exclude_none=True, responses=ERROR_RESPONSES, dependencies=[Depends(one_file_only)]
)  # several `file` fields: 422 naming POST /classify/batch
async def classify(
    file: Annotated[UploadFile, File(description="the image (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM)")],
    options: ClassifyQuery,
    pipeline: Pipeline,
    metrics: Metrics,
    deadline: RequestDeadline,
) -> Classification:
    """Classify one image on the split model: head and spike encoder here, the rest on the edge."""
    classified = await pipeline.classify([await file.read()], options, deadline)
    result = Classification.build(classified.only(), options.logits, options.spikes)
    metrics.observe(result)
    return result


def upload_field_detail(path: str, exc: RequestValidationError) -> str | None:
    """A message naming the right multipart field when a classify request lacks it; None for other problems."""
    field = {CLASSIFY_PATH: SINGLE_FIELD, BATCH_PATH: BATCH_FIELD}.get(path)
    problems = [e for e in exc.errors() if tuple(e["loc"]) == ("body", field)]
    if field is None or not problems:
        return None
    body = exc.body
    sent = list(dict.fromkeys(body.keys())) if isinstance(body, FormData) else []
    has = (
        f"this request's form has {', '.join(f'`{name}`' for name in sent)}"
        if sent
        else "this request has no multipart form fields"
    )
    if field == SINGLE_FIELD:
        usage = (
            f"POST {CLASSIFY_PATH} needs the image as a file in the multipart form field named `{field}` "
            f"(required; curl -F {field}=@image.png); {has}. Several images: POST {BATCH_PATH}, one "
            f"`{BATCH_FIELD}` field each"
        )
    else:
        usage = (
            f"POST {BATCH_PATH} needs the images as files in multipart form fields named `{field}`, one "
            f"each (required; curl -F {field}=@a.png -F {field}=@b.png); {has}. One image: POST "
            f"{CLASSIFY_PATH} with a `{SINGLE_FIELD}` field"
        )
    if all(e["type"] == "missing" for e in problems):
        return usage
    return f"`{field}` must be a file upload, not a text value: {usage}"
