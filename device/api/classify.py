"""``POST /classify``: one image through the split model, and the refusals that name the right upload field.

the image (multipart field ``file``, or the body itself as image/*) -> SplitPipeline.classify -> Classification
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
RAW_IMAGE_TYPE = "image/"  # a Content-Type with this prefix: the body is the image itself (curl --data-binary)


class AmbiguousUpload(SpikeBottleNetError, ValueError):
    """Several ``file`` fields sent to ``POST /classify``, which classifies one image."""


class MissingUpload(SpikeBottleNetError, ValueError):
    """A ``POST /classify`` with neither a ``file`` field nor an image/* body; the message says how to send one."""


async def uploaded_image(request: Request, file: UploadFile | None) -> bytes:
    """The image of a ``POST /classify``: the ``file`` field of a multipart form, or the body itself when the
    Content-Type is image/* (no multipart framing to build or parse, so a client can send the file as it is)."""
    if file is not None:
        return await file.read()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type.startswith(RAW_IMAGE_TYPE):
        return await request.body()  # empty: ImageError, as an empty file field
    form = await request.form()  # parsed already for a form (FastAPI read it for ``file``); empty otherwise
    raise MissingUpload(single_upload_usage(list(dict.fromkeys(form.keys()))))


async def one_file_only(request: Request) -> None:
    """Dependency of ``POST /classify``: several ``file`` fields are refused rather than all but one ignored."""
    count = len((await request.form()).getlist(SINGLE_FIELD))  # the form FastAPI already parsed
    if count > 1:
        raise AmbiguousUpload(
            f"{count} {SINGLE_FIELD} fields: POST /classify classifies one image; send several "
            f"images to POST {BATCH_PATH}, one {BATCH_FIELD} field each"
        )


router = APIRouter()


# FastAPI describes the multipart form from ``file``; the raw body is added beside it, and the body required
RAW_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    CLASSIFY_PATH,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(one_file_only)],  # several `file` fields: 422 naming POST /classify/batch
    openapi_extra=RAW_IMAGE_BODY,
)
async def classify(
    request: Request,
    options: ClassifyQuery,
    pipeline: Pipeline,
    metrics: Metrics,
    deadline: RequestDeadline,
    file: Annotated[
        UploadFile | None,
        File(
            description="the image (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM); or send the image itself as the body, "
            "with Content-Type image/png, image/jpeg, ..."
        ),
    ] = None,
) -> Classification:
    """Classify one image on the split model: head and spike encoder here, the rest on the edge."""
    classified = await pipeline.classify([await uploaded_image(request, file)], options, deadline)
    result = Classification.build(classified.only(), options.logits, options.spikes)
    metrics.observe(result)
    return result


def single_upload_usage(sent: list[str]) -> str:
    """How to send ``POST /classify`` its image, and what this request's form had (``sent``: its field names)."""
    return (
        f"POST {CLASSIFY_PATH} needs the image as a file in the multipart form field named `{SINGLE_FIELD}` "
        f"(required; curl -F {SINGLE_FIELD}=@image.png), or as the body itself with Content-Type image/* "
        f"(curl -H 'Content-Type: image/png' --data-binary @image.png); {form_fields(sent)}. Several images: "
        f"POST {BATCH_PATH}, one `{BATCH_FIELD}` field each"
    )


def form_fields(sent: list[str]) -> str:
    if not sent:
        return "this request has no multipart form fields"
    return f"this request's form has {', '.join(f'`{name}`' for name in sent)}"


def upload_field_detail(path: str, exc: RequestValidationError) -> str | None:
    """A message naming the right multipart field when a classify request's is missing or not a file; None for
    other problems."""
    field = {CLASSIFY_PATH: SINGLE_FIELD, BATCH_PATH: BATCH_FIELD}.get(path)
    problems = [e for e in exc.errors() if tuple(e["loc"]) == ("body", field)]
    if field is None or not problems:
        return None
    body = exc.body
    sent = list(dict.fromkeys(body.keys())) if isinstance(body, FormData) else []
    if field == SINGLE_FIELD:
        usage = single_upload_usage(sent)
    else:
        usage = (
            f"POST {BATCH_PATH} needs the images as files in multipart form fields named `{field}`, one "
            f"each (required; curl -F {field}=@a.png -F {field}=@b.png); {form_fields(sent)}. One image: POST "
            f"{CLASSIFY_PATH} with a `{SINGLE_FIELD}` field, or the image itself as the body"
        )
    if all(e["type"] == "missing" for e in problems):
        return usage
    return f"`{field}` must be a file upload, not a text value: {usage}"
