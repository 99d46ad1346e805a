"""``sbn bench``: latency and throughput of the split path (HTTP -> device -> gRPC -> edge) against the
same model run monolithically in this process, on the same images.

    split        N x POST /classify through a device and an edge, timed at the HTTP client
    monolithic   N x the same classification in-process (``sbn predict``'s path: no HTTP, no gRPC)

Each path runs at every ``--concurrency`` (requests in flight at once, from a thread pool), after a
warm-up. Reported: p50 / p95 / p99 latency, requests per second, the split/monolithic latency ratio,
each concurrency's throughput against concurrency 1, the mean batch the device's head and the edge's
tail ran (micro-batching), the bytes each request puts on the wire, and the median device / edge /
network split of a request. ``--json`` prints one object per concurrency level instead.

By default edge and device are started as child processes on free local ports, with one torch
thread each (their default), and this process runs the monolithic model with the same one thread;
``--url`` benchmarks an already running device instead (it must serve the same checkpoint).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx
import numpy as np
from PIL import Image

from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.codec import CODEC_CHOICES
from spikebottlenet.shared.model_arguments import add_model_arguments, chosen_checkpoint
from spikebottlenet.shared.processes import free_port
from spikebottlenet.shared.torch_runtime import configure_torch_threads

from .predict import MonolithicClassifier
from .up import local_stack


def synthetic_png(seed: int = 0, size: tuple[int, int] = (32, 32)) -> bytes:
    """A seeded random RGB image (width, height), PNG-encoded: reproducible input for benchmarks and tests."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Run:
    latencies_ms: list[float]
    wall_s: float

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_ms) / self.wall_s


def measure(
    classify: Callable[[bytes], Any], images: Sequence[bytes], requests: int, concurrency: int
) -> tuple[Run, list[Any]]:
    """``requests`` calls of ``classify``, ``concurrency`` at a time, cycling through ``images``."""

    def timed(i: int) -> tuple[float, Any]:
        start = perf_counter()
        result = classify(images[i % len(images)])
        return (perf_counter() - start) * 1e3, result

    start = perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(timed, range(requests)))
    wall_s = perf_counter() - start
    return Run([ms for ms, _ in outcomes], wall_s), [result for _, result in outcomes]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="benchmark this running device (e.g. http://127.0.0.1:8000) instead of starting edge and device"
    )
    add_model_arguments(parser, "benchmark on both paths")
    parser.add_argument("--requests", type=int, default=200, help="requests per path and concurrency (default: 200)")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4, 16],
        help="requests in flight at once; one run each (default: 1 4 16)",
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests per path first (default: 10)")
    parser.add_argument(
        "--image", type=Path, action="append", help="input image (repeatable); default: 8 seeded random 32x32 PNGs"
    )
    parser.add_argument(
        "--codec",
        choices=CODEC_CHOICES,
        default="raw",
        help="spike codec of the started device and the monolithic byte counts (default: raw)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the monolithic run in this process (default: 1, as each served half)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per concurrency level (for machines) instead of the tables",
    )


def run(args: argparse.Namespace) -> int:
    configure_torch_threads(args.threads)
    checkpoint = chosen_checkpoint(args)
    monolithic = MonolithicClassifier(load_checkpoint(checkpoint, "full"), args.codec)
    images = [path.read_bytes() for path in args.image] if args.image else [synthetic_png(i) for i in range(8)]
    if args.url:
        return _bench(args, monolithic, images, args.url.rstrip("/"))
    port = free_port()
    # the children's stdout (uvicorn's access log) goes to stderr: stdout is for the results
    with local_stack(
        checkpoint, port=port, edge_port=free_port(), device_flags=["--codec", args.codec], stdout=sys.stderr.fileno()
    ):
        return _bench(args, monolithic, images, f"http://127.0.0.1:{port}")


def _bench(args: argparse.Namespace, monolithic: MonolithicClassifier, images: list[bytes], url: str) -> int:
    with httpx.Client(base_url=url, timeout=60) as client:
        ready = client.get("/readyz")
        if ready.status_code != 200 or ready.json()["model_fingerprint"] != monolithic.checkpoint.fingerprint:
            print(f"sbn bench: the device at {url} is not ready with this checkpoint: {ready.text}", file=sys.stderr)
            return 1

        def split(image: bytes) -> dict[str, Any]:  # the image in a multipart form, as a browser sends it
            response = client.post("/classify", files={"file": ("image.png", image, "image/png")})
            response.raise_for_status()
            return response.json()

        def split_body(image: bytes) -> dict[str, Any]:  # the image as the body itself: no form to build or parse
            response = client.post("/classify", content=image, headers={"Content-Type": "image/png"})
            response.raise_for_status()
            return response.json()

        paths: dict[str, Callable[[bytes], Any]] = {
            "split": split,
            "split-body": split_body,
            "monolithic": monolithic.classify,
        }
        for classify in paths.values():
            measure(classify, images, args.warmup, 1)
        runs: dict[tuple[str, int], Run] = {}
        replies: dict[int, list[dict[str, Any]]] = {}
        for concurrency in args.concurrency:
            for name, classify in paths.items():
                runs[name, concurrency], results = measure(classify, images, args.requests, concurrency)
                if name == "split":
                    replies[concurrency] = results
    if args.json:
        print(json.dumps(levels(runs, replies), indent=2))
    else:
        _report(args, monolithic, images, runs, replies)
    return 0


def mean_batch(replies: list[dict[str, Any]], field: str) -> float:
    """The mean, over requests, of the batch each rode in (a reply reports the size of its own batch): a batch of 16
    counts 16 times, so this is the batch a request sees, above the mean per run."""
    return statistics.mean(reply[field] for reply in replies)


def levels(runs: dict[tuple[str, int], Run], replies: dict[int, list[dict[str, Any]]]) -> list[dict[str, float]]:
    """One object per concurrency level: the figures ``--json`` prints."""
    return [
        {
            "concurrency": concurrency,
            "split_p50_ms": runs["split", concurrency].percentile(50),
            "split_p99_ms": runs["split", concurrency].percentile(99),
            "split_body_p50_ms": runs["split-body", concurrency].percentile(50),
            "split_body_rps": runs["split-body", concurrency].requests_per_s,
            "monolithic_p50_ms": runs["monolithic", concurrency].percentile(50),
            "split_rps": runs["split", concurrency].requests_per_s,
            "monolithic_rps": runs["monolithic", concurrency].requests_per_s,
            "mean_head_batch": mean_batch(results, "head_batch_images"),
            "mean_edge_batch": mean_batch(results, "edge_batch_images"),
        }
        for concurrency, results in replies.items()
    ]


def _report(
    args: argparse.Namespace,
    monolithic: MonolithicClassifier,
    images: list[bytes],
    runs: dict[tuple[str, int], Run],
    replies_by_level: dict[int, list[dict[str, Any]]],
) -> None:
    config = monolithic.checkpoint.config
    replies = [reply for results in replies_by_level.values() for reply in results]
    first = replies[0]
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"CPU cores: {os.cpu_count()} ({affinity} available to this process); torch threads: {args.threads} "
        f"(monolithic), 1 each in edge and device unless SBN_*_THREADS say otherwise"
    )
    print(
        f"model: {first['arch']} split after {first['split_point_name']}, width x{config.backbone.width_multiplier}, "
        f"T={config.time_steps}, {'trained' if monolithic.checkpoint.trained else 'untrained'}, "
        f"fingerprint {monolithic.checkpoint.fingerprint[:12]}"
    )
    print(
        f"inputs: {len(images)} images, {args.requests} requests per run after {args.warmup} warm-up; "
        f"codec {first['codec']}"
    )
    print()
    print(
        f"{'path':<12}{'concurrency':>12}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'req/s':>10}"
        f"{'head batch':>12}{'edge batch':>12}"
    )
    for (name, concurrency), r in runs.items():
        batches = (
            (
                f"{mean_batch(replies_by_level[concurrency], 'head_batch_images'):>12.2f}"
                f"{mean_batch(replies_by_level[concurrency], 'edge_batch_images'):>12.2f}"
            )
            if name == "split"
            else ""
        )
        print(
            f"{name:<12}{concurrency:>12}{r.percentile(50):>10.2f}{r.percentile(95):>10.2f}{r.percentile(99):>10.2f}"
            f"{r.requests_per_s:>10.1f}{batches}"
        )
    print()
    base = args.concurrency[0]
    for concurrency in args.concurrency:
        split, mono = runs["split", concurrency], runs["monolithic", concurrency]
        print(
            f"split / monolithic at concurrency {concurrency}: "
            f"p50 x{split.percentile(50) / mono.percentile(50):.2f}, "
            f"p95 x{split.percentile(95) / mono.percentile(95):.2f}, "
            f"req/s x{split.requests_per_s / mono.requests_per_s:.2f}; "
            f"split req/s x{split.requests_per_s / runs['split', base].requests_per_s:.2f} its concurrency-{base} "
            f"figure"
        )
        body = runs["split-body", concurrency]
        print(
            f"  the image as the body instead of a form: p50 x{body.percentile(50) / split.percentile(50):.2f}, "
            f"req/s x{body.requests_per_s / split.requests_per_s:.2f}; split-body / monolithic p50 "
            f"x{body.percentile(50) / mono.percentile(50):.2f}"
        )
    print()
    print(
        f"bytes per request: spike payload {first['transmitted_bytes']} B, gRPC request {first['message_bytes']} B "
        f"(compression x{first['compression_ratio']:.1f} vs. the {first['split_point_name']} output); "
        f"image upload {statistics.mean(map(len, images)):.0f} B"
    )
    parts = {
        part: statistics.median(reply["latency_ms"][part] for reply in replies)
        for part in ("device", "edge", "network", "total")
    }
    print("split request, server-side medians: " + ", ".join(f"{part} {ms:.2f} ms" for part, ms in parts.items()))
