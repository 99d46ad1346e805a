"""Throughput of one device over 1, 2, ... edge replicas on this machine (loopback).

    python -m bench.replica_bench [--replicas 1 2 3] [--requests 400] [--concurrency 16] [--json]

For each replica count, that many ``sbn edge`` processes (one torch thread each, metrics on) and one
``sbn device`` whose edge target lists them all (``ipv4:a,b,...``: gRPC round robin) start on 127.0.0.1;
``--requests`` uploads go through the device, ``--concurrency`` at a time, after a warm-up. Reported:
requests per second and p50/p99 latency, the throughput against one replica measured in the same run,
and how the frames spread over the replicas (each edge's own count of frames answered).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from sbn.up import free_port, spawn, stop_all, wait_for_edge, wait_for_http
from shared.checkpoint import default_checkpoint

from .e2e import measure, synthetic_png

ARCH, SPLIT_POINT = "spiking_resnet50", 8


def frames_answered(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sbn_edge_frames_total{") and 'code="OK"' in line)


def run_with(replicas: int, requests: int, concurrency: int) -> dict[str, Any]:
    checkpoint = str(default_checkpoint(ARCH, SPLIT_POINT))
    children, edges = [], []
    quiet = {"stdout": sys.stderr.fileno()}
    try:
        for _ in range(replicas):
            port, metrics_port = free_port(), free_port()
            children.append(spawn("edge", "--checkpoint", checkpoint, "--host", "127.0.0.1", "--port", str(port),
                                  "--metrics-port", str(metrics_port), **quiet))
            edges.append((f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"))
        for (address, _), child in zip(edges, children, strict=True):
            wait_for_edge(address, child)
        device_port = free_port()
        target = "ipv4:" + ",".join(address for address, _ in edges)
        children.append(spawn("device", "--checkpoint", checkpoint, "--host", "127.0.0.1", "--port", str(device_port),
                              "--edge-address", target, **quiet))
        url = f"http://127.0.0.1:{device_port}"
        wait_for_http(f"{url}/readyz", children[-1])
        images = [synthetic_png(i) for i in range(8)]
        with httpx.Client(base_url=url, timeout=60,
                          limits=httpx.Limits(max_connections=concurrency)) as client:
            def classify(image: bytes) -> int:
                return client.post("/classify", files={"file": ("x.png", image, "image/png")}).status_code

            measure(classify, images, 2 * concurrency, concurrency)  # warm-up
            before = [frames_answered(metrics) for _, metrics in edges]
            run, codes = measure(classify, images, requests, concurrency)
            spread = [frames_answered(metrics) - b for (_, metrics), b in zip(edges, before, strict=True)]
        return {"replicas": replicas, "requests": requests, "ok": sum(c == 200 for c in codes),
                "requests_per_s": run.requests_per_s, "p50_ms": run.percentile(50), "p99_ms": run.percentile(99),
                "frames_per_replica": spread}
    finally:
        stop_all(children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run_with(n, args.requests, args.concurrency) for n in args.replicas]
    base = rows[0]["requests_per_s"]
    for row in rows:
        row["throughput_vs_first"] = row["requests_per_s"] / base
    if args.json:
        print(json.dumps({"cpu_cores": os.cpu_count(), "rows": rows}, indent=2))
        return
    print(f"{os.cpu_count()} CPU cores; RB8 demo model, one torch thread per process, concurrency {args.concurrency}")
    print(f"{'replicas':>8} {'ok':>5} {'req/s':>7} {'x first':>7} {'p50 ms':>7} {'p99 ms':>7}  frames per replica")
    for r in rows:
        print(f"{r['replicas']:>8} {r['ok']:>5} {r['requests_per_s']:7.1f} {r['throughput_vs_first']:7.2f} "
              f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f}  {[int(f) for f in r['frames_per_replica']]}")


if __name__ == "__main__":
    main()
