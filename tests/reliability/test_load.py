"""Load on loopback: 1,000 uploads at concurrency 16 through ``sbn device`` and ``sbn edge`` processes.

Every answer must be a 200 with the monolithic model's class, although the 16 uploads in flight are
batched on both halves (device/head_queue.py, edge/micro_batcher.py), and neither process may grow:
resident memory after the run within 10% of after the warm-up. The warm-up is long enough to have
run every batch size the load produces, so that the allocator's first blocks for each are taken by
then; what grows after it is a leak.

The model is split after RB1, so the tail, the larger half, runs on the edge's inference worker while
the device's head keeps it fed. About 15 s on 2 busy cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from spikebottlenet.sbn.bench import measure, synthetic_png
from spikebottlenet.sbn.up import local_stack
from spikebottlenet.shared.processes import free_port
from tests.stack import monolithic_logits, upload

SPLIT_POINT = 1
WARMUP, REQUESTS, CONCURRENCY = 500, 1000, 16
IMAGES = 16  # distinct seeded images, cycled
BUDGET_S = 240  # the whole run gives up past this
RSS_TOLERANCE = 0.10


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def stack(calibrated_checkpoint: Callable[..., Path]) -> Iterator[tuple[httpx.Client, dict[str, int], Path]]:
    """A client of a device process, the pids of {"edge", "device"}, and their checkpoint."""
    checkpoint = calibrated_checkpoint(SPLIT_POINT)
    port = free_port()
    with (
        local_stack(checkpoint, SPLIT_POINT, port=port, edge_port=free_port()) as (edge, device),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the device did not become ready"
            time.sleep(0.1)
        yield client, {"edge": edge.pid, "device": device.pid}, checkpoint


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads resident memory from Linux /proc")
def test_1000_requests_at_concurrency_16_all_right_and_no_growth(
    stack: tuple[httpx.Client, dict[str, int], Path], report: Callable[[str], None]
) -> None:
    client, pids, checkpoint = stack
    images = [synthetic_png(seed, size=(32 + seed, 32)) for seed in range(IMAGES)]
    expected = {image: int(monolithic_logits(checkpoint, image).argmax()) for image in images}
    give_up = time.monotonic() + BUDGET_S

    def classify(image: bytes) -> tuple[int, int | None, bool]:
        """(status, class index, matches the monolithic model)"""
        if time.monotonic() > give_up:
            raise TimeoutError(f"the load test ran past its {BUDGET_S} s budget")
        response = client.post("/classify", files=upload(image))
        index = response.json().get("class_index")
        return response.status_code, index, index == expected[image]

    measure(classify, images, WARMUP, CONCURRENCY)
    warm = {name: rss_kib(pid) for name, pid in pids.items()}
    run, results = measure(classify, images, REQUESTS, CONCURRENCY)
    after = {name: rss_kib(pid) for name, pid in pids.items()}

    failures = [r for r in results if r[0] != 200]
    assert not failures, f"{len(failures)} of {REQUESTS} failed, e.g. {failures[:3]}"
    assert all(right for _, _, right in results), "an answer differs from the monolithic model's class"
    memory = ", ".join(
        f"{name} {warm[name] / 1024:.0f} -> {after[name] / 1024:.0f} MiB ({after[name] / warm[name] - 1:+.1%})"
        for name in pids
    )
    report(
        f"load: {REQUESTS} requests at concurrency {CONCURRENCY}, after {WARMUP} warm-up: "
        f"{REQUESTS}/{REQUESTS} answered 200 with the monolithic model's class; p50 {run.percentile(50):.0f} ms, "
        f"p99 {run.percentile(99):.0f} ms, {run.requests_per_s:.1f} requests/s; RSS {memory}"
    )
    for name in pids:
        assert abs(after[name] - warm[name]) <= RSS_TOLERANCE * warm[name], f"{name}: {memory}"
