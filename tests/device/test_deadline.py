"""StampDeadline on its own, driven as an ASGI app: every request answered by its deadline, whatever the app does.

Timing bounds allow for a busy host: each answer must come no earlier than its deadline and within SLACK_S after
it (StampDeadline's own grace is 20 ms).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from spikebottlenet.device.deadline import ARRIVED, STRAGGLER_GRACE_S, StampDeadline

BUDGET_S = 0.2
SLACK_S = 0.25


def scope(body_declared: bool = True, **state: Any) -> Scope:
    headers = [(b"content-length", b"1000")] if body_declared else []
    return {"type": "http", "method": "POST", "path": "/classify", "headers": headers, "state": state}


def trickle(first: bytes) -> Receive:
    """A client that sends ``first`` of its body and then nothing."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": first, "more_body": True}
        await asyncio.Event().wait()  # never
        raise AssertionError("unreachable")

    return receive


async def whole_body(receive: Receive) -> None:
    while (await receive()).get("more_body", False):
        pass


async def answered(
    middleware: StampDeadline, request: Scope, receive: Receive
) -> tuple[int, dict[str, str], dict, float]:
    """(status, headers, JSON body, seconds until the response ended) of one request through ``middleware``."""
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    start = time.monotonic()
    await middleware(request, receive, send)
    seconds = time.monotonic() - start
    head, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    headers = {k.decode(): v.decode() for k, v in head["headers"]}
    return head["status"], headers, json.loads(body), seconds


def run(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], request: Scope, receive: Receive, max_arriving: int = 8
) -> tuple[int, dict[str, str], dict, float]:
    return asyncio.run(answered(StampDeadline(app, BUDGET_S, max_arriving, retry_after_s=1), request, receive))


async def hang(scope: Scope, receive: Receive, send: Send) -> None:
    await whole_body(receive)
    await asyncio.Event().wait()


def test_an_app_still_working_at_the_deadline_is_answered_504_then() -> None:
    status, headers, body, seconds = run(hang, scope(body_declared=False), trickle(b""))
    assert status == 504 and "0.2 s deadline passed" in body["detail"] and "connection" not in headers
    assert BUDGET_S <= seconds <= BUDGET_S + STRAGGLER_GRACE_S + SLACK_S


def test_a_body_not_arrived_by_the_deadline_is_408_and_closes_the_connection() -> None:
    status, headers, body, seconds = run(hang, scope(), trickle(b"12345"))
    assert (status, headers["connection"]) == (408, "close")
    assert "had not fully arrived by its 0.2 s deadline (5 bytes received)" in body["detail"]
    assert BUDGET_S <= seconds <= BUDGET_S + STRAGGLER_GRACE_S + SLACK_S


def test_the_deadline_counts_from_the_first_byte() -> None:
    early = 0.15  # the protocol saw the request's first byte this long ago
    status, _, _, seconds = run(hang, scope(body_declared=False, **{ARRIVED: time.monotonic() - early}), trickle(b""))
    assert status == 504 and seconds <= BUDGET_S - early + STRAGGLER_GRACE_S + SLACK_S


def test_a_response_started_in_time_is_not_cut_off() -> None:
    async def slow_body(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(BUDGET_S + STRAGGLER_GRACE_S + 0.05)  # past the deadline, after answering
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    assert run(slow_body, scope(body_declared=False), trickle(b""))[:3] == (200, {}, {"ok": True})


def test_one_arrival_too_many_drops_the_oldest_with_a_503_at_once() -> None:
    async def two() -> list[tuple[int, dict[str, str], dict, float]]:
        middleware = StampDeadline(hang, BUDGET_S, max_arriving=1, retry_after_s=1)
        oldest = asyncio.ensure_future(answered(middleware, scope(), trickle(b"a")))
        await asyncio.sleep(0.01)
        newest = asyncio.ensure_future(answered(middleware, scope(), trickle(b"b")))
        return list(await asyncio.gather(oldest, newest))

    (status, headers, body, seconds), (newest_status, *_) = asyncio.run(two())
    assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
    assert "arriving the longest" in body["detail"] and seconds < BUDGET_S
    assert newest_status == 408  # the newest kept its slot until its own deadline
