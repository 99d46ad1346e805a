"""The device on its two runtimes, torch and onnx (no torch importable), beside one edge, in one run.

    python bench/device_runtime_bench.py                      # the default demo model (RB8), 200 requests
    python bench/device_runtime_bench.py --requests 500 --json

One edge process serves the checkpoint. For each runtime a device process starts on it (onnx: the head
exported to a temporary file by ``sbn export onnx``, in a process whose ``import torch`` fails), and:

- cold start: seconds from spawning the process to its first 200 on /readyz (model loaded, warmed up, edge
  reached);
- latency: ``--requests`` POST /classify one at a time (the image as the request body), p50 and p95, after
  a warm-up, with the in-process monolithic model (``sbn predict``'s path, one torch thread) timed on the
  same images in between, so each runtime's split / monolithic ratio comes from the same minutes;
- memory: the device process's resident set (VmRSS) after the requests, and its peak (VmHWM).

The machine is shared: compare the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.sbn.predict import MonolithicClassifier
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.onnx_export import export_head
from spikebottlenet.shared.processes import free_port, spawn, stop, wait_for_edge, wait_for_http
from spikebottlenet.shared.torch_runtime import configure_torch_threads

BLOCK_TORCH = (
    "raise ModuleNotFoundError('torch is blocked in this process: the onnx device must not need it', name='torch')\n"
)


def torchless_environment(folder: Path) -> dict[str, str]:
    """This process's environment with a ``torch`` package in ``folder``, ahead of the real one, whose import fails."""
    (folder / "torch").mkdir(parents=True)
    (folder / "torch" / "__init__.py").write_text(BLOCK_TORCH)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of process ``pid``, in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def time_requests(client: httpx.Client, images: list[bytes], requests: int) -> list[float]:
    times = []
    for i in range(requests):
        start = time.perf_counter()
        client.post("/classify", content=images[i % len(images)], headers={"Content-Type": "image/png"})
        times.append((time.perf_counter() - start) * 1e3)
    return times


def time_monolithic(monolithic: MonolithicClassifier, images: list[bytes], requests: int) -> list[float]:
    times = []
    for i in range(requests):
        start = time.perf_counter()
        monolithic.classify(images[i % len(images)])
        times.append((time.perf_counter() - start) * 1e3)
    return times


def bench_runtime(
    runtime: str, head: Path, edge: str, env: dict[str, str], monolithic: MonolithicClassifier, args: argparse.Namespace
) -> dict[str, Any]:
    port = free_port()
    flags = ["--checkpoint", str(head), "--runtime", runtime, "--port", str(port), "--edge-address", edge]
    start = time.perf_counter()
    process = spawn("device", *flags, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", process, timeout_s=120)
        cold_start_s = time.perf_counter() - start
        images = [synthetic_png(i) for i in range(8)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            time_requests(client, images, args.warmup)
            split = time_requests(client, images, args.requests)
        mono = time_monolithic(monolithic, images, args.requests)
        memory = memory_mb(process.pid)
    finally:
        stop(process)
    return {
        "runtime": runtime,
        "cold_start_s": round(cold_start_s, 2),
        "split_p50_ms": round(percentile(split, 50), 2),
        "split_p95_ms": round(percentile(split, 95), 2),
        "monolithic_p50_ms": round(percentile(mono, 50), 2),
        "split_over_monolithic_p50": round(percentile(split, 50) / percentile(mono, 50), 3),
        "rss_mb": round(memory["VmRSS"], 1),
        "peak_rss_mb": round(memory["VmHWM"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="spiking_resnet50")
    parser.add_argument("--split-point", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    configure_torch_threads(1)
    checkpoint = default_checkpoint(args.arch, args.split_point)
    monolithic = MonolithicClassifier(load_checkpoint(checkpoint, "full"))
    with tempfile.TemporaryDirectory() as folder:
        head = Path(folder) / "head.onnx"
        export_head(checkpoint, head)
        torchless = torchless_environment(Path(folder) / "no-torch")
        edge_port = free_port()
        edge = spawn("edge", "--checkpoint", str(checkpoint), "--port", str(edge_port), stdout=subprocess.DEVNULL)
        try:
            wait_for_edge(f"127.0.0.1:{edge_port}", edge)
            rows = [
                bench_runtime("torch", checkpoint, f"127.0.0.1:{edge_port}", dict(os.environ), monolithic, args),
                bench_runtime("onnx", head, f"127.0.0.1:{edge_port}", torchless, monolithic, args),
            ]
        finally:
            stop(edge)
    torch_row, onnx_row = rows
    ratios = {
        "onnx_over_torch_split_p50": round(onnx_row["split_p50_ms"] / torch_row["split_p50_ms"], 3),
        "onnx_over_torch_rss": round(onnx_row["rss_mb"] / torch_row["rss_mb"], 3),
        "onnx_over_torch_cold_start": round(onnx_row["cold_start_s"] / torch_row["cold_start_s"], 3),
    }
    if args.json:
        print(json.dumps({"model": f"{args.arch}/{args.split_point}", "runtimes": rows, **ratios}, indent=1))
        return 0
    print(
        f"{'runtime':<8}{'cold start s':>14}{'split p50 ms':>14}{'p95 ms':>9}{'mono p50 ms':>13}{'split/mono':>12}"
        f"{'RSS MB':>9}{'peak MB':>9}"
    )
    for row in rows:
        print(
            f"{row['runtime']:<8}{row['cold_start_s']:>14}{row['split_p50_ms']:>14}{row['split_p95_ms']:>9}"
            f"{row['monolithic_p50_ms']:>13}{row['split_over_monolithic_p50']:>12}{row['rss_mb']:>9}"
            f"{row['peak_rss_mb']:>9}"
        )
    print(
        "onnx / torch: "
        + ", ".join(f"{name.removeprefix('onnx_over_torch_')} x{value}" for name, value in ratios.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
