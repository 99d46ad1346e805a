"""Decompression bombs against a ``sbn device`` process: the issue's 95 KB 16-bit 7000x7000 PNG and 6 KB 1-bit one
(49 megapixels each; decoded, seconds and over a gigabyte) are refused with a 413 naming the budget from their
header, within 100 ms; a normal upload sent among 32 of them gets its answer; and the device's resident memory
afterwards is within 50 MiB of before.

The bombs are real PNGs, written row by row with zlib (tests/shared/test_preprocess.py: png_uniform), so that
the test itself never holds their decoded size.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.preprocess import MAX_DECODED_BYTES
from tests.shared.test_preprocess import png_uniform
from tests.stack import EdgeProcess, device_process_and_pid, upload

from .test_load import rss_kib

SIDE = 7_000  # 49 megapixels
BOMBS = {"16-bit": png_uniform(SIDE, SIDE, 16, 0), "1-bit": png_uniform(SIDE, SIDE, 1, 0)}
REFUSED_WITHIN_S = 0.1  # the bound; the header check itself takes about a millisecond
TRIES = 5  # per bomb: the median is held to the bound, so that one scheduling hiccup of a busy host is not a failure
ATTACK, NORMAL = 32, 8  # bombs at once (the 32), with normal uploads among them
RSS_SLACK_KIB = 50 * 1024
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads resident memory from /proc")


@pytest.fixture(scope="module")
def device(checkpoint: Path, edge: EdgeProcess) -> Iterator[tuple[str, int]]:
    """(URL, pid) of a device process with the default decoded-size budget."""
    with device_process_and_pid(checkpoint, edge.address) as (url, pid):
        with httpx.Client(base_url=url, timeout=30) as client:  # warm: every head batch size a burst makes
            for _ in range(3):
                assert client.post("/classify", files=upload(synthetic_png())).status_code == 200
        yield url, pid


def test_each_bomb_is_a_413_naming_the_budget_within_100_ms(
    device: tuple[str, int], report: Callable[[str], None]
) -> None:
    url, _ = device
    figures = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for name, bomb in BOMBS.items():
            seconds = []
            for _ in range(TRIES):
                start = time.monotonic()
                response = client.post("/classify", files=upload(bomb))
                seconds.append(time.monotonic() - start)
                assert response.status_code == 413, response.text
                detail = response.json()["detail"]
                assert f"{SIDE}x{SIDE} pixels" in detail and f"at most {MAX_DECODED_BYTES:,} decoded bytes" in detail
            assert statistics.median(seconds) <= REFUSED_WITHIN_S, f"{name}: {seconds}"
            figures.append(
                f"{name} ({len(bomb) / 1024:.0f} KB): median {statistics.median(seconds) * 1e3:.0f} ms, "
                f"slowest {max(seconds) * 1e3:.0f} ms"
            )
    report(
        f"image bombs, {SIDE}x{SIDE} PNGs: 413 naming the {MAX_DECODED_BYTES:,}-byte decoded-size budget, "
        f"{TRIES} tries each: {'; '.join(figures)}"
    )


async def attack(url: str) -> tuple[list[int], list[tuple[int, float]]]:
    """ATTACK bombs and NORMAL normal uploads at once: the bombs' statuses, and (status, seconds) of each normal
    one."""
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_connections=ATTACK + NORMAL)
    ) as client:

        async def normal(seed: int) -> tuple[int, float]:
            start = time.monotonic()
            response = await client.post("/classify", files=upload(synthetic_png(seed)))
            return response.status_code, time.monotonic() - start

        async def bomb(i: int) -> int:
            return (await client.post("/classify", files=upload(list(BOMBS.values())[i % 2]))).status_code

        bombs = [bomb(i) for i in range(ATTACK)]
        normals = [normal(seed) for seed in range(NORMAL)]
        every = await asyncio.gather(*bombs[: ATTACK // 2], *normals, *bombs[ATTACK // 2 :])  # normals among them
    return [*every[: ATTACK // 2], *every[ATTACK // 2 + NORMAL :]], every[ATTACK // 2 : ATTACK // 2 + NORMAL]


def test_normal_uploads_are_answered_during_an_attack_and_memory_comes_back(
    device: tuple[str, int], report: Callable[[str], None]
) -> None:
    url, pid = device
    before = rss_kib(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:  # the device's resident memory while it is under attack
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        bombs, normals = asyncio.run(attack(url))
    finally:
        done.set()
        sampler.join()
    after = rss_kib(pid)
    assert bombs == [413] * ATTACK
    assert [status for status, _ in normals] == [200] * NORMAL
    assert abs(after - before) <= RSS_SLACK_KIB, f"device RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"
    report(
        f"image bombs: {ATTACK} at once ({ATTACK // 2} of each) with {NORMAL} normal uploads among them: "
        f"{ATTACK} x 413, {NORMAL} x 200 (slowest {max(s for _, s in normals):.3f} s); device RSS "
        f"{before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB, {after / 1024:.0f} MiB after "
        f"({(after - before) / 1024:+.1f} MiB)"
    )
