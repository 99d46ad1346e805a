"""Slow senders against a ``sbn device`` process: the deadline covers receiving a request, and trickling clients
cannot keep normal ones out.

    slowloris     200 connections trickling a byte at a time, half of them their headers, half their body,
                  while 50 normal uploads are sent: every normal one gets 200, every trickling connection is
                  answered in JSON and closed by its deadline (408, or 503 for those dropped early to make room:
                  at most SBN_DEVICE_MAX_ARRIVING_UPLOADS bodies may be arriving at once)
    one body      headers and part of a body, then nothing: 408 in JSON at the deadline, the connection closed

Plain HTTP/1.1 over asyncio streams for the slow clients (a client library would not send half a request);
httpx for the normal ones.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from spikebottlenet.sbn.bench import synthetic_png
from tests.stack import EdgeProcess, device_process, upload

DEADLINE_S = 2.0
TRICKLE_S = 0.5  # between two bytes of a slow sender
CLOSED_WITHIN_S = DEADLINE_S + 0.5  # a slow connection's answer and close: its deadline, and a loaded host's delay
SLOW, NORMAL, NORMAL_AT_ONCE = 200, 50, 5
BODY_BYTES = 100_000  # the body a slow sender declares, of which it sends a byte per TRICKLE_S
HEAD = b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@dataclass(frozen=True)
class Cut:
    """How the device ended a slow connection."""

    status: int | None  # of the response it sent before closing, if any
    detail: str | None
    seconds: float  # from the connection's first byte to its close


async def slow_sender(host: str, port: int, first: bytes, trickle: bytes, give_up_s: float) -> Cut:
    """Sends ``first``, then a byte of ``trickle`` every TRICKLE_S, reading whatever comes back, until the device
    closes the connection (or ``give_up_s`` passes: then a Cut with no status and ``give_up_s``)."""
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()
    writer.write(first)
    received = b""
    try:
        for byte in trickle:
            try:
                while chunk := await asyncio.wait_for(reader.read(65536), TRICKLE_S):
                    received += chunk
                break  # end of stream: closed
            except TimeoutError:
                if time.monotonic() - start > give_up_s:
                    return Cut(None, None, give_up_s)
                writer.write(bytes([byte]))
    except ConnectionError:  # closed while we wrote
        pass
    finally:
        writer.close()
    seconds = time.monotonic() - start
    head, _, body = received.partition(b"\r\n\r\n")
    if not head:
        return Cut(None, None, seconds)
    return Cut(int(head.split()[1]), json.loads(body)["detail"], seconds)


def slow_head(host: str, port: int, give_up_s: float) -> asyncio.Future[Cut]:
    """A request whose headers never end."""
    return asyncio.ensure_future(slow_sender(host, port, HEAD, b"X-Slow: " + b"z" * 1000, give_up_s))


def slow_body(host: str, port: int, give_up_s: float) -> asyncio.Future[Cut]:
    """An upload whose body arrives a byte at a time."""
    boundary = "slow"
    head = (
        HEAD
        + (
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {BODY_BYTES}\r\n\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        ).encode()
    )
    return asyncio.ensure_future(slow_sender(host, port, head, synthetic_png() * 100, give_up_s))


@pytest.fixture(scope="module")
def device(checkpoint: Path, edge: EdgeProcess) -> Iterator[str]:
    with device_process(checkpoint, edge.address, "--deadline-s", str(DEADLINE_S)) as url:
        yield url


async def slowloris(url: str) -> tuple[list[Cut], list[Cut], list[int]]:
    """SLOW slow senders (half heads, half bodies) and, once they are all sending, NORMAL normal uploads,
    NORMAL_AT_ONCE at a time: the heads' cuts, the bodies' cuts, and the normal uploads' statuses."""
    host, port = url.removeprefix("http://").split(":")
    give_up_s = 4 * CLOSED_WITHIN_S  # past this, a connection is reported still open
    heads = [slow_head(host, int(port), give_up_s) for _ in range(SLOW // 2)]
    bodies = [slow_body(host, int(port), give_up_s) for _ in range(SLOW // 2)]
    await asyncio.sleep(TRICKLE_S)  # all connected and trickling
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def normal(seeds: range) -> list[int]:
            return [(await client.post("/classify", files=upload(synthetic_png(seed)))).status_code for seed in seeds]

        per = NORMAL // NORMAL_AT_ONCE
        normals = await asyncio.gather(*(normal(range(i * per, (i + 1) * per)) for i in range(NORMAL_AT_ONCE)))
    return list(await asyncio.gather(*heads)), list(await asyncio.gather(*bodies)), sum(normals, [])


def test_200_slow_senders_keep_no_normal_upload_out_and_are_each_cut_off_by_their_deadline(
    device: str, report: Callable[[str], None]
) -> None:
    heads, bodies, normals = asyncio.run(slowloris(device))
    assert normals == [200] * NORMAL
    for cut in heads:
        assert cut.status == 408 and "had not fully arrived" in cut.detail, cut
    for cut in bodies:
        assert (cut.status == 408 and "had not fully arrived" in cut.detail) or (
            cut.status == 503 and "arriving the longest" in cut.detail
        ), cut
    slowest = max(cut.seconds for cut in heads + bodies)
    assert slowest <= CLOSED_WITHIN_S, f"a slow connection stayed open {slowest:.2f} s"
    statuses = Counter(cut.status for cut in bodies)
    report(
        f"slowloris, deadline {DEADLINE_S:g} s: {SLOW} connections trickling a byte every {TRICKLE_S:g} s "
        f"({SLOW // 2} their headers, {SLOW // 2} their body) while {NORMAL} normal uploads were sent: "
        f"{normals.count(200)}/{NORMAL} normal x 200; slow headers: {SLOW // 2} x 408 and closed "
        f"{min(c.seconds for c in heads):.2f}-{max(c.seconds for c in heads):.2f} s after their first byte; slow "
        f"bodies: {statuses[408]} x 408 at the deadline, {statuses[503]} x 503 dropped to make room, every one "
        f"closed within {max(c.seconds for c in bodies):.2f} s"
    )


def test_a_body_unfinished_at_its_deadline_is_a_json_408_at_the_deadline_and_its_connection_closed(
    device: str, report: Callable[[str], None]
) -> None:
    host, port = device.removeprefix("http://").split(":")

    async def one() -> Cut:
        return await slow_body(host, int(port), give_up_s=4 * CLOSED_WITHIN_S)

    cut = asyncio.run(one())
    assert cut.status == 408 and f"by its {DEADLINE_S:g} s deadline" in cut.detail, cut
    assert DEADLINE_S <= cut.seconds <= CLOSED_WITHIN_S, cut  # closed: slow_sender read to the end of the stream
    with httpx.Client(base_url=device, timeout=30) as client:  # and the device goes on
        assert client.post("/classify", files=upload(synthetic_png())).status_code == 200
    report(
        f"a body unfinished at its {DEADLINE_S:g} s deadline: 408 ({cut.detail!r}) and the connection closed "
        f"{cut.seconds:.2f} s after its first byte"
    )
