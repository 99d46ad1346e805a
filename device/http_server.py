"""The device's HTTP server: uvicorn on h11, with the device's limits (settings: deadline_s, limit_concurrency,
timeout_keep_alive_s, max_header_bytes).

h11 is named rather than left to uvicorn, which would take httptools wherever it is installed: one parser, with
the same limits, everywhere. Its protocol gets three changes (DeviceProtocol):

    - each request's first byte is timed. The request's deadline counts from it (StampDeadline reads it from
      scope["state"][ARRIVED], device/deadline.py), and a request still arriving at its deadline is cut off: one
      whose head (request line and headers) is not in gets a 408 and its connection is closed; one the app has
      answered without reading all of its body (401, 413) has its connection closed, where uvicorn would read a
      trickled body for ever. A body the app is still reading is StampDeadline's to answer (408).
    - a connection that sends nothing at all is closed after timeout_keep_alive_s, as an idle one is after an
      answer: uvicorn sets no timer on a new connection.
    - an invalid request gets a JSON 400, as every other error of this API, not uvicorn's plain text.

Not changed: past limit_concurrency, uvicorn answers 503 in plain text before the app sees the request.
"""

from __future__ import annotations

import asyncio
import json
from time import monotonic
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .deadline import ARRIVED
from .settings import DeviceSettings


def json_error(status_code: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response carrying ``{"detail": detail}``, its connection to be closed."""
    body = json.dumps({"detail": detail}).encode()
    return (f"HTTP/1.1 {status_code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


class DeviceProtocol(H11Protocol):
    """uvicorn's h11 protocol, timing each request from its first byte (see the module's docstring)."""

    deadline_s: float  # set by protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrived: float | None = None  # time.monotonic() of the first byte of the request arriving now
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # idle until its first byte, which cancels this (data_received), as it does after an answer
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        if self._arrived is None:  # the first byte of a request: its clock starts
            self._arrived = monotonic()
            self._deadline = self.loop.call_later(self.deadline_s, self._at_deadline)
        super().data_received(data)
        self._stop_clock_once_arrived()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle and self._arrived is not None:  # a request's head is in, its task not yet run
            self.cycle.scope["state"][ARRIVED] = self._arrived

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may take in a pipelined request
        self._stop_clock_once_arrived()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's, in JSON; h11 has refused the request, so it is not the app's to answer
        self.transport.write(json_error(400, "Bad Request", (
            f"invalid HTTP request: malformed, or its request line and headers are over the "
            f"{self.config.h11_max_incomplete_event_size}-byte limit")))
        self.transport.close()

    def _arriving(self) -> bool:
        """Whether part of a request is in and the rest is not: its body, or its head (bytes buffered by h11)."""
        state = self.conn.their_state
        return state is h11.SEND_BODY or (state is h11.IDLE and bool(self.conn.trailing_data[0]))

    def _stop_clock_once_arrived(self) -> None:
        if not self._arriving():
            self._stop_clock()

    def _stop_clock(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._arrived = self._deadline = None

    def _at_deadline(self) -> None:
        """The request now arriving has not arrived by its deadline."""
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # the app is reading its body: StampDeadline answers 408 and closes the connection
        self._deadline = None
        if self.conn.their_state is h11.IDLE:  # its head is not in: no app has seen it
            self.transport.write(json_error(408, "Request Timeout", (
                f"the request's head (request line and headers) had not fully arrived by its {self.deadline_s:g} s "
                f"deadline")))
        self.transport.close()  # else already answered: what is left of its body is dropped with the connection


def protocol(deadline_s: float) -> type[DeviceProtocol]:
    """DeviceProtocol with this deadline (uvicorn makes one per connection from a class)."""
    return type(DeviceProtocol.__name__, (DeviceProtocol,), {"deadline_s": deadline_s})


def server_options(settings: DeviceSettings) -> dict[str, Any]:
    """uvicorn's options (``uvicorn.run(app, **options)``, ``uvicorn.Config``) for ``settings``' address and limits."""
    # asyncio's own loop, named: uvicorn would switch to uvloop wherever it is installed (ray[serve] brings it), and
    # the edge channel (grpc.aio) is made for asyncio's loop
    return {"host": settings.host, "port": settings.port, "loop": "asyncio", "http": protocol(settings.deadline_s),
            "limit_concurrency": settings.limit_concurrency, "timeout_keep_alive": settings.timeout_keep_alive_s,
            "h11_max_incomplete_event_size": settings.max_header_bytes}
