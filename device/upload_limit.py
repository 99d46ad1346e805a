"""A request body limit enforced while the body streams in, answered with a JSON 413."""

from __future__ import annotations

from fastapi import HTTPException, status
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class UploadLimit:
    """ASGI middleware: a request body over ``max_bytes`` is refused before it is read any further.

    A declared Content-Length over the limit is refused before the first body byte is read; a body
    without one (chunked) is counted as it arrives and refused at the first chunk past the limit. So
    an oversized upload never reaches the multipart parser, which would otherwise spool all of it.

    The refusal is an HTTPException raised from ``receive``: FastAPI lets it through its body parsing
    unchanged, and the app's exception handling turns it into ``{"detail": ...}`` like any other
    error. (FastAPI's own ``max_body_size`` answers an over-long Content-Length in plain text.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"request body is larger than the {self.max_bytes}-byte upload limit"
        )
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, receive_limited, send)
