"""A request's deadline: one budget for everything the request waits for, from its first byte to its answer.

Three layers keep it:

    the HTTP protocol   notes when each request's first byte arrives, closes a connection whose request
                        head has not arrived by the deadline, with a 408, and drops one whose answer has not
                        been written a second after it (device/http_server.py)
    StampDeadline       gives the request its Deadline from that moment, and answers at the deadline whatever
                        the request is still doing: 408 with the connection closed if its body has not fully
                        arrived, else 504. It also bounds how many bodies may be arriving at once.
    the waits inside    decoding, the head, the edge: each ends at the deadline and says what it waited for
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# scope["state"] key: time.monotonic() when the request's first byte arrived (set by the HTTP protocol)
ARRIVED = "sbn_arrived"
# At its deadline a request's own waits end with a 504 naming what they waited for; StampDeadline answers what is
# still running this much later, so that it does not pre-empt their messages.
STRAGGLER_GRACE_S = 0.02


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() by which the request must be answered
    budget_s: float  # the whole budget it started with, for messages

    @classmethod
    def after(cls, seconds: float, since: float | None = None) -> Deadline:
        """``seconds`` after ``since`` (a time.monotonic(); default: now)."""
        return cls((monotonic() if since is None else since) + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left, 0 once passed."""
        return max(0.0, self.at - monotonic())

    def elapsed(self) -> float:
        """Seconds since the request arrived."""
        return self.budget_s - (self.at - monotonic())

    def expired(self) -> bool:
        return monotonic() >= self.at


class ArrivingBodies:
    """The requests whose body is still arriving, oldest first, at most ``limit``: admitting one more drops the one
    that has been arriving longest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._drops: OrderedDict[object, Callable[[], None]] = OrderedDict()  # request -> how to drop it

    def admit(self, request: object, drop: Callable[[], None]) -> None:
        if len(self._drops) >= self.limit:
            _, drop_oldest = self._drops.popitem(last=False)
            drop_oldest()
        self._drops[request] = drop

    def arrived(self, request: object) -> None:
        """``request``'s body is in, or it has ended."""
        self._drops.pop(request, None)


@dataclass
class Body:
    """How much of a request's body has arrived, as the app reads it."""

    receive: Receive
    complete: bool  # all of it is in (or none was declared), or the client has gone
    on_complete: Callable[[], None]
    received: int = 0  # bytes

    @classmethod
    def of(cls, scope: Scope, receive: Receive, on_complete: Callable[[], None]) -> Body:
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
        return cls(receive, not declared, on_complete)

    async def read(self) -> Message:
        message = await self.receive()
        self.received += len(message.get("body", b""))
        if not self.complete and (message["type"] == "http.disconnect" or not message.get("more_body", False)):
            self.complete = True
            self.on_complete()
        return message


class StampDeadline:
    """ASGI middleware: every HTTP request gets its Deadline in ``request.state.deadline``, and an answer by it.

    The deadline counts from the request's first byte (the protocol's ARRIVED; without it, from now), so it
    covers the whole request as its client sees it: sending headers and upload, decoding it, waiting for the
    head, the head, and the edge. What has not answered STRAGGLER_GRACE_S after it is cancelled and answered
    here:

        its body not fully arrived    408, connection closed (its client is still sending)
        otherwise                     504

    At most ``max_arriving`` requests may be receiving a body at once: one more drops the one that has been
    arriving longest (503, connection closed). Uploads from normal clients arrive in milliseconds; a flood of
    trickling ones would otherwise hold every slot until their deadlines and keep normal clients out.
    """

    def __init__(self, app: ASGIApp, budget_s: float, max_arriving: int, retry_after_s: int) -> None:
        self.app = app
        self.budget_s = budget_s
        self.arriving = ArrivingBodies(max_arriving)
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        deadline = state["deadline"] = Deadline.after(self.budget_s, state.get(ARRIVED))
        loop = asyncio.get_running_loop()
        request = object()  # this request, in self.arriving
        body = Body.of(scope, receive, lambda: self.arriving.arrived(request))
        started = dropped = False

        async def send_watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.arriving.arrived(request)  # answered: it holds no arrival slot whatever its body does
                if not answer_by.expired():  # (the app may answer in the step that the expiry's cancel interrupts)
                    # the response goes out at its client's pace, within the bound the HTTP protocol sets on writing
                    answer_by.reschedule(None)
            await send(message)

        def drop() -> None:
            nonlocal dropped
            if not answer_by.expired():
                dropped = True
                answer_by.reschedule(loop.time())

        try:
            async with asyncio.timeout(deadline.remaining() + STRAGGLER_GRACE_S) as answer_by:
                if not body.complete:
                    self.arriving.admit(request, drop)
                try:
                    await self.app(scope, body.read, send_watched)
                finally:
                    self.arriving.arrived(request)
        except TimeoutError:
            if not answer_by.expired():  # not this layer's: the app's own
                raise
            if not started:  # else the app was cut off mid-answer, and the server closes the connection
                await self._late_answer(deadline, body, dropped)(scope, receive, send)

    def _late_answer(self, deadline: Deadline, body: Body, dropped: bool) -> JSONResponse:
        close = {"Connection": "close"}  # the body is unread: the connection cannot carry another request
        if dropped:
            return JSONResponse(
                {
                    "detail": f"the device is receiving {self.arriving.limit} uploads at once, the most it takes "
                    f"(SBN_DEVICE_MAX_ARRIVING_UPLOADS), and this one had been arriving the longest; retry "
                    f"later"
                },
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={**close, "Retry-After": str(self.retry_after_s)},
            )
        if not body.complete:
            return JSONResponse(
                {
                    "detail": f"the request's body had not fully arrived by its {deadline.budget_s:g} s deadline "
                    f"({body.received:,} bytes received)"
                },
                status_code=status.HTTP_408_REQUEST_TIMEOUT,
                headers=close,
            )
        return JSONResponse(
            {"detail": f"the {deadline.budget_s:g} s deadline passed before the answer was ready"},
            status_code=status.HTTP_504_GATEWAY_TIMEOUT,
        )
