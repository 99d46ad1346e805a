"""The device's HTTP server: uvicorn on h11, with the device's limits (settings: deadline_s, limit_concurrency,
timeout_keep_alive_s, max_header_bytes).

h11 is named rather than left to uvicorn, which would take httptools wherever it is installed: one parser, with
the same limits, everywhere. Its protocol gets four changes (DeviceProtocol):

    - each request is timed from its first byte, or, for one pipelined behind the request before it, from the
      moment that one has been answered and it comes up, until its body has arrived. The request's deadline counts
      from that start (StampDeadline reads it from scope["state"][ARRIVED], device/deadline.py), and a request
      still arriving at its deadline is cut off: one whose head (request line and headers) is not in gets a 408
      and its connection is closed; one the app has answered without reading all of its body (401, 413) has its
      connection closed, where uvicorn would read a trickled body for ever. A body the app is still reading is
      StampDeadline's to answer (408).
    - an answer is written by its request's deadline plus WRITE_GRACE_S, or its connection is dropped: a client
      that does not read would otherwise hold the connection, and the app's task while the answer does not fit
      the socket's buffers, for ever (asyncio closes a connection only once what it holds to send has gone).
    - a connection that sends nothing at all is closed after timeout_keep_alive_s, as an idle one is after an
      answer: uvicorn sets no timer on a new connection.
    - an invalid request gets a JSON 400, as every other error of this API, not uvicorn's plain text.

Not changed: past limit_concurrency, uvicorn answers 503 in plain text before the app sees the request.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import sys
from time import monotonic
from typing import Any

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # as uvicorn imports it
from uvicorn.protocols.http.h11_impl import H11Protocol

from .deadline import ARRIVED
from .settings import DeviceSettings

log = logging.getLogger("sbn.device")

# StampDeadline answers what is still running 20 ms past its request's deadline; an answer, a few kilobytes, that
# has not gone out a second after that is to a client that does not read it
WRITE_GRACE_S = 1.0
# h11's reason for refusing a request may quote the client's bytes (an illegal header line): quoted up to this much
MAX_REASON_CHARS = 200


def json_error(status_code: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response carrying ``{"detail": detail}``, its connection to be closed."""
    body = json.dumps({"detail": detail}).encode()
    return (
        f"HTTP/1.1 {status_code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n\r\n"
    ).encode() + body


class TimedConnection(h11.Connection):
    """h11's server side, telling its DeviceProtocol where each request's arrival begins and ends."""

    def __init__(self, protocol: DeviceProtocol, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size)
        self._protocol = protocol

    def receive_data(self, data: bytes) -> None:
        # bytes while no request is in progress begin one (a body's belong to its request; bytes pipelined behind a
        # request that has arrived begin the next when it comes up: start_next_cycle)
        if data and self.their_state is h11.IDLE:
            self._protocol.request_begins()
        super().receive_data(data)

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        event = super().next_event()
        if isinstance(event, h11.Request):
            self._protocol.head_arrived()
        elif isinstance(event, h11.EndOfMessage):
            self._protocol.request_arrived()
        return event

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        if self.trailing_data[0]:  # the next request came in behind the last one: it is up now
            self._protocol.request_begins()


class DeviceProtocol(H11Protocol):
    """uvicorn's h11 protocol, timing each request from its first byte (see the module's docstring)."""

    deadline_s: float  # set by protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # no byte has been received yet: uvicorn's connection is replaced by one that reports to this protocol
        self.conn = TimedConnection(self, self._max_head_bytes)
        self._arrived: float | None = None  # time.monotonic() of the first byte of the request arriving now
        self._deadline: asyncio.TimerHandle | None = None  # that request's deadline, while it is arriving
        self._head_arrived = 0.0  # the _arrived of the request whose head came in last
        self._write_by: asyncio.TimerHandle | None = None  # the latest request's answer is written by then

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # idle until its first byte, which cancels this (data_received), as it does after an answer
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def request_begins(self) -> None:
        """The first byte of a request is in (or it has come up, pipelined): its clock starts, unless running."""
        if self._arrived is None:
            self._arrived = monotonic()
            self._deadline = self.loop.call_later(self.deadline_s, self._at_deadline)

    def head_arrived(self) -> None:
        """The request's head is in; its first byte passed request_begins, as every request's does."""
        assert self._arrived is not None
        self._head_arrived = self._arrived

    def request_arrived(self) -> None:
        """The request's body (if any) is in: it is no longer arriving."""
        self._stop_clock()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's head is in, its task not yet run
            self.cycle.scope["state"][ARRIVED] = self._head_arrived
            # the answers before it are in the transport's buffer ahead of its own: its bound covers them too
            if self._write_by is not None:
                self._write_by.cancel()
            write_by = self._head_arrived + self.deadline_s + WRITE_GRACE_S
            self._write_by = self.loop.call_later(write_by - monotonic(), self._at_write_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        if self._write_by is not None:
            self._write_by.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this as it handles h11's RemoteProtocolError: h11 has refused what the client sent, so the
        # request is not the app's to answer. Only a request not yet answered gets the 400: after an answer (an early
        # 401 or 413, whose body then turns out malformed) it would be a second one the client never asked for.
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.write(json_error(400, "Bad Request", f"invalid HTTP request: {self._refusal()}"))
        self.transport.close()

    def _refusal(self) -> str:
        """Why h11 refused the request (the RemoteProtocolError being handled)."""
        error = sys.exception()
        if not isinstance(error, h11.RemoteProtocolError):
            return "malformed"
        if error.error_status_hint == 431:  # h11's "Receive buffer too long"
            return f"its request line and headers are over the {self._max_head_bytes}-byte limit"
        reason = str(error)
        return reason if len(reason) <= MAX_REASON_CHARS else f"{reason[:MAX_REASON_CHARS]}..."

    @property
    def _max_head_bytes(self) -> int:
        """h11's limit on an unfinished request head, as uvicorn sets it."""
        return self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE

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
            self.transport.write(
                json_error(
                    408,
                    "Request Timeout",
                    (
                        f"the request's head (request line and headers) had not fully arrived by its "
                        f"{self.deadline_s:g} s deadline"
                    ),
                )
            )
        self.transport.close()  # else already answered: what is left of its body is dropped with the connection

    def _at_write_deadline(self) -> None:
        """The latest request's deadline and WRITE_GRACE_S have passed: its answer must have been written."""
        self._write_by = None
        if not self.cycle.response_complete or self.transport.get_write_buffer_size():
            self.transport.abort()  # close() would wait for the unread answer to be sent


class DeviceServer(uvicorn.Server):
    """uvicorn's server, as ``sbn device`` runs it: once started, what the process has built is kept out of the
    garbage collector."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # the app's lifespan has run (heads, edge channel), the port is open
            # What exists now (torch, the heads, pydantic's models: ~300k objects) lives as long as the process, yet
            # each full collection would walk it all, 0.1-0.2 s with every thread stopped: deadlines overrun. Here,
            # not in the app, so that an app served inside another process (the tests) leaves its host's alone.
            gc.collect()
            gc.freeze()
            log.info("%d objects frozen out of the garbage collector", gc.get_freeze_count())


def protocol(deadline_s: float) -> type[DeviceProtocol]:
    """DeviceProtocol with this deadline (uvicorn makes one per connection from a class)."""
    return type(DeviceProtocol.__name__, (DeviceProtocol,), {"deadline_s": deadline_s})


def server_options(settings: DeviceSettings) -> dict[str, Any]:
    """uvicorn's options (``uvicorn.run(app, **options)``, ``uvicorn.Config``) for ``settings``' address and limits."""
    # asyncio's own loop, named: uvicorn would switch to uvloop wherever it is installed (ray[serve] brings it), and
    # the edge channel (grpc.aio) is made for asyncio's loop
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "asyncio",
        "http": protocol(settings.deadline_s),
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
