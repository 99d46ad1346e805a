"""Deadlines end to end and bounded queues, with real edge and device processes on 127.0.0.1.

A burst of uploads against a slow edge: every request is answered 200 or 504 within its deadline plus
a small margin, whatever it was waiting for (the head, a free edge call, the edge); frames whose
caller has given up are dropped by the edge instead of run; a full head queue answers 503 with
Retry-After at once.

The burst's client is this test process, whose garbage collector is paused while it measures: a full
collection of a process holding torch takes 0.1-0.2 s, which would be the client's delay, not the
device's.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port, stop_all, wait_for_edge
from tests.stack import EdgeProcess, device_process, scraped, start_edge

DEADLINE_S = 0.3
MARGIN_S = 0.1  # the bound: every answer within deadline + 100 ms
ROUNDS_IN_BUDGET = 3
EDGE_DELAY_S = DEADLINE_S / ROUNDS_IN_BUDGET  # the slow edge holds each frame this long before it runs
# frames the slow edge takes at once, and the device sends at once: EDGE_SLOTS answers per EDGE_DELAY_S at most, so at
# most 3 rounds of 4 fit the budget, and at least 28 of a burst of 40 are 504s, however fast the host
EDGE_SLOTS = 4
MOST_ANSWERED = ROUNDS_IN_BUDGET * EDGE_SLOTS
BURST = 40
BURSTS = 5  # one after the other: the slowest answer of all is held to the bound


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: dict
    seconds: float  # from the request's first byte sent to the response's last byte read


def multipart_post(image: bytes) -> bytes:
    """The bytes of ``POST /classify`` with ``image`` as the ``file`` field, ready to write to a socket."""
    boundary = "sbn-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


@contextmanager
def no_collection() -> Iterator[None]:
    """This process's garbage collector paused (a full collection here would delay the client, not the device)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def burst(url: str, n: int) -> list[Answer]:
    """``n`` uploads written at once on ``n`` connections opened beforehand, from one event loop.

    Plain HTTP/1.1 over asyncio streams rather than a client library: the timing then holds the server's
    time and the loopback, not a client's per-request overhead multiplied by the burst.
    """
    host, port = url.removeprefix("http://").split(":")
    requests = [multipart_post(synthetic_png(seed)) for seed in range(8)]
    connections = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for _ in range(n)))

    async def one(i: int) -> Answer:
        reader, writer = connections[i]
        start = time.monotonic()
        writer.write(requests[i % len(requests)])
        await writer.drain()
        status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in header_lines if line)
        body = await reader.readexactly(int(headers["content-length"]))
        seconds = time.monotonic() - start
        writer.close()
        return Answer(int(status_line.split()[1]), headers, json.loads(body), seconds)

    return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.fixture(scope="module")
def slow_stack(checkpoint: Path) -> Iterator[tuple[str, str]]:
    """(device URL, edge metrics URL): an edge that holds every frame EDGE_DELAY_S and takes EDGE_SLOTS at once, a
    device with DEADLINE_S."""
    metrics_port = free_port()
    edge = start_edge(
        checkpoint,
        None,
        "--inject-delay-s",
        str(EDGE_DELAY_S),
        "--metrics-port",
        str(metrics_port),
        "--max-concurrency",
        str(EDGE_SLOTS),
    )
    try:
        wait_for_edge(edge.address, edge.process)
        with device_process(
            checkpoint, edge.address, "--deadline-s", str(DEADLINE_S), "--max-edge-calls", str(EDGE_SLOTS)
        ) as url:
            yield url, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        stop_all([edge.process])


def test_a_burst_gets_200_or_504_within_the_deadline_and_the_edge_drops_what_nobody_waits_for(
    slow_stack: tuple[str, str], report: Callable[[str], None]
) -> None:
    url, edge_metrics = slow_stack
    bursts = []
    for _ in range(BURSTS):
        with no_collection():
            bursts.append(asyncio.run(burst(url, BURST)))
    for answers in bursts:
        statuses = [answer.status for answer in answers]
        assert set(statuses) <= {200, 504} and statuses.count(200) <= MOST_ANSWERED, statuses
    answers = sum(bursts, [])
    statuses = [answer.status for answer in answers]
    slowest = max(answer.seconds for answer in answers)
    assert slowest <= DEADLINE_S + MARGIN_S, f"an answer took {slowest:.3f} s"
    timeouts = [answer.body["detail"] for answer in answers if answer.status == 504]
    assert all("deadline" in detail.lower() for detail in timeouts)
    # What the device gave up on, the edge did not run: such a frame is answered DEADLINE_EXCEEDED or
    # CANCELLED there, counted as its gRPC thread lets go (at the call's end, so allow a moment).
    until = time.monotonic() + 10
    while (
        dropped := sum(
            scraped(edge_metrics, "sbn_edge_frames_total", code=code) for code in ("DEADLINE_EXCEEDED", "CANCELLED")
        )
    ) == 0:
        assert time.monotonic() < until, "the edge ran every frame, also those whose caller had gone"
        time.sleep(0.05)
    ran = scraped(edge_metrics, "sbn_edge_frames_total", code="OK")
    # after the burst the edge has its capacity back: one more upload goes through
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/classify", files={"file": ("x.png", synthetic_png(), "image/png")}).status_code == 200
    report(
        f"deadline {DEADLINE_S:g} s, edge holding each frame {EDGE_DELAY_S:g} s, {EDGE_SLOTS} at once: {BURSTS} "
        f"bursts of {BURST} concurrent uploads -> {statuses.count(200)} x 200, {statuses.count(504)} x 504, "
        f"slowest answer {slowest:.3f} s (200s: {max(a.seconds for a in answers if a.status == 200):.3f} s); the "
        f"edge dropped {dropped:.0f} frames whose caller had gone, ran {ran:.0f}"
    )


def test_a_full_head_queue_answers_503_with_retry_after_at_once(
    checkpoint: Path, edge: EdgeProcess, report: Callable[[str], None]
) -> None:
    with device_process(checkpoint, edge.address, "--head-queue-limit", "2") as url:
        answers = asyncio.run(burst(url, BURST))
    statuses = [answer.status for answer in answers]
    assert set(statuses) <= {200, 503}, statuses
    refused = [answer for answer in answers if answer.status == 503]
    assert refused, "40 uploads at once cannot all fit a queue of 2 behind one head"
    for answer in refused:
        assert answer.headers["retry-after"] == "1"
        assert "waiting for the head" in answer.body["detail"]
    report(
        f"head queue limit 2: {BURST} concurrent uploads -> {statuses.count(200)} x 200, {len(refused)} x 503 "
        f"with Retry-After, refused within {max(answer.seconds for answer in refused):.3f} s"
    )
