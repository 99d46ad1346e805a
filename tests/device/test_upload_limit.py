"""UploadLimit on its own, driven as an ASGI app in front of a FastAPI route that parses a multipart upload as
POST /classify does: a body over the limit is answered 413 in JSON, having read no more of it than it had to."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import FastAPI, File, UploadFile
from starlette.types import Message

from spikebottlenet.device.upload_limit import UploadLimit

LIMIT = 1024
BOUNDARY = b"b"
REFUSAL = {"detail": f"request body is larger than the {LIMIT}-byte upload limit"}


def upload_app() -> UploadLimit:
    app = FastAPI()

    @app.post("/upload")
    async def take(file: Annotated[UploadFile, File()]) -> dict[str, int]:
        return {"bytes": len(await file.read())}

    return UploadLimit(app, max_bytes=LIMIT)


def multipart(content: bytes) -> bytes:
    return b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + content + b"\r\n--b--\r\n"


def post(chunks: list[bytes], content_length: int | None) -> tuple[int, dict, int]:
    """(status, JSON body, body chunks the app read) of ``chunks`` posted to /upload, with ``content_length``
    declared (None: chunked, none declared)."""
    headers = [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    read = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(upload_app()(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert dict(start["headers"])[b"content-type"] == b"application/json"
    return start["status"], json.loads(body), read


def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read() -> None:
    body = multipart(bytes(4 * LIMIT))
    assert post([body], len(body)) == (413, REFUSAL, 0)


def test_a_chunked_body_is_refused_at_the_first_chunk_past_the_limit() -> None:
    body = multipart(bytes(4 * LIMIT))
    chunks = [body[i : i + LIMIT // 4] for i in range(0, len(body), LIMIT // 4)]  # 17 chunks
    # 4 chunks are the limit exactly, the 5th takes the body past it: the other 12 are never read
    assert post(chunks, None) == (413, REFUSAL, 5)


def test_a_body_longer_than_it_declared_is_cut_off_at_the_limit_too() -> None:
    body = multipart(bytes(4 * LIMIT))
    chunks = [body[i : i + LIMIT // 2] for i in range(0, len(body), LIMIT // 2)]
    assert post(chunks, LIMIT)[:2] == (413, REFUSAL)  # declared within the limit: counted as it arrives


def test_a_body_within_the_limit_reaches_the_route_whole() -> None:
    body = multipart(bytes(LIMIT // 2))
    assert len(body) <= LIMIT
    assert post([body[:100], body[100:]], len(body)) == (200, {"bytes": LIMIT // 2}, 2)
