"""An API key on the routes that do work or tell about it, checked before the request body is read."""

from __future__ import annotations

import hmac
from collections.abc import Collection

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"


def given_key(scope: Scope) -> bytes | None:
    """The request's X-API-Key header, if any."""
    # Raw header bytes: ASGI servers lower-case the names, and nothing is decoded, so any byte sequence compares as
    # sent.
    return dict(scope["headers"]).get(API_KEY_HEADER.lower().encode())


def carries_key(scope: Scope, key: bytes) -> bool:
    """Whether the request carries ``key``; in the same time however much of it a guess gets right."""
    given = given_key(scope)
    return given is not None and hmac.compare_digest(given, key)


class ApiKeyRequired:
    """ASGI middleware: a request to one of ``paths`` without the key in the X-API-Key header gets a JSON 401.

    As middleware rather than a route dependency, it answers before the body is read: FastAPI parses
    a route's upload before it runs the route's dependencies, so a dependency would let anyone
    without the key have the device receive and parse uploads. The comparison takes the same time
    however much of the key a guess gets right (``hmac.compare_digest``).
    """

    def __init__(self, app: ASGIApp, key: str, paths: Collection[str]) -> None:
        self.app = app
        self.key = key.encode()
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if carries_key(scope, self.key):
            await self.app(scope, receive, send)
            return
        problem = "no" if given_key(scope) is None else "a wrong"
        response = JSONResponse(
            {"detail": f"unauthorized: {problem} API key in the {API_KEY_HEADER} header"},
            status_code=status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'},
        )
        await response(scope, receive, send)
