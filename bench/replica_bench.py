"""Throughput of a scaled edge tier on this machine (loopback): 1, 2, ... replicas of ``sbn edge``, or of
``sbn serve-ray``'s deployment.

    python -m bench.replica_bench [--engine edge|serve-ray] [--load frames|uploads] [--replicas 1 2 3]
                                  [--requests 400] [--concurrency 16] [--kill-one-at 0.5] [--json]

Engines: ``edge`` starts that many ``sbn edge`` processes (one torch thread each) and calls them as one target
(``ipv4:a,b,...``: gRPC round robin, as a device does over a Compose service's replicas); ``serve-ray`` starts one
``sbn serve-ray`` with that many replicas (each reserving its share of the cores) behind Serve's gRPC proxy.

Loads: ``frames`` is many devices' worth of frames, encoded beforehand by a real head from eight images and sent
straight to the tier over gRPC, ``--concurrency`` in flight (a bounded loop: ``--requests`` frames); ``uploads``
goes through one ``sbn device`` (POST /classify), which then shares the cores with the tier.

Reported per replica count, after a warm-up: frames (or requests) per second, p50/p99 latency, the throughput
against the first replica count measured in the same run, and how the frames spread over the replicas (each reply
names the replica that ran it). ``--kill-one-at f``: after that fraction of the frames has been sent, one replica
is killed (SIGKILL); the frames that fail are reported with whether they had been sent before the kill.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from time import monotonic, perf_counter, sleep
from typing import Any

import grpc
import httpx

from spikebottlenet.device.edge_client import CHANNEL_OPTIONS
from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.sbn.bench import Run, synthetic_png
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.processes import free_port, spawn, stop_all, wait_for_edge, wait_for_http
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc

ARCH, SPLIT_POINT = "spiking_resnet50", 8
QUIET = {"stdout": sys.stderr.fileno()}


@dataclass
class Tier:
    target: str  # what a device's edge_address would be
    kill_one: Callable[[], None]  # SIGKILLs one replica


@contextmanager
def edge_tier(checkpoint: str, replicas: int) -> Iterator[Tier]:
    children, addresses = [], []
    try:
        for _ in range(replicas):
            port = free_port()
            children.append(
                spawn("edge", "--checkpoint", checkpoint, "--host", "127.0.0.1", "--port", str(port), **QUIET)
            )
            addresses.append(f"127.0.0.1:{port}")
        for address, child in zip(addresses, children, strict=True):
            wait_for_edge(address, child)
        yield Tier("ipv4:" + ",".join(addresses), lambda: children[0].send_signal(signal.SIGKILL))
    finally:
        stop_all(children)


def serve_replica_pids(serve_ray_pid: int) -> list[int]:
    """The processes of the Serve replicas that one ``sbn serve-ray`` started on its local Ray instance (they descend
    from it: it starts Ray's raylet, which starts the workers)."""
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    parent, args = {}, {}
    for line in table.splitlines():
        pid, ppid, *command = line.split(None, 2)
        parent[int(pid)], args[int(pid)] = int(ppid), command[0] if command else ""

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == serve_ray_pid:
                return True
        return False

    from spikebottlenet.edge.ray_serve import APP_NAME, DEPLOYMENT_NAME  # only where Ray is installed

    title = f"ray::ServeReplica:{APP_NAME}:{DEPLOYMENT_NAME}"  # how Ray names a replica's worker process
    return sorted(pid for pid, command in args.items() if command.startswith(title) and descends(pid))


def wait_for_replicas(
    address: str, frame: pb.SpikeFrame, replicas: int, process: subprocess.Popen[bytes], timeout_s: float = 300
) -> None:
    """Until frames sent to ``address`` have come back from ``replicas`` different replicas (each reply names its
    own): every one has loaded its tail and takes frames."""
    deadline, seen = monotonic() + timeout_s, set()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)
        while len(seen) < replicas:
            if process.poll() is not None:
                raise RuntimeError(f"sbn serve-ray exited with status {process.returncode} (see its log above)")
            if monotonic() > deadline:
                raise TimeoutError(f"frames reached {len(seen)} of {replicas} replicas within {timeout_s:g} s")
            calls = [stub.Infer.future(frame, timeout=10) for _ in range(2 * replicas)]
            for call in calls:
                try:
                    seen.add(call.result().served_by)
                except grpc.RpcError:  # not serving yet
                    sleep(0.5)


@contextmanager
def serve_ray_tier(checkpoint: str, replicas: int) -> Iterator[Tier]:
    port = free_port()
    cpus = min(1.0, (os.cpu_count() or 1) / replicas)  # all of them fit on this machine's local Ray instance
    child = spawn(
        "serve-ray",
        "--checkpoint",
        checkpoint,
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--replicas",
        str(replicas),
        "--cpus-per-replica",
        f"{cpus:g}",
        **QUIET,
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_for_replicas(address, HeadRunner.load(checkpoint).run(synthetic_png(0)).frame, replicas, child)

        def kill_one() -> None:
            pids = serve_replica_pids(child.pid)
            if not pids:
                raise RuntimeError("no Serve replica process to kill")
            os.kill(pids[0], signal.SIGKILL)

        yield Tier(address, kill_one)
    finally:
        stop_all([child])


@dataclass
class Outcome:
    sent: float  # monotonic()
    ms: float
    ok: bool
    served_by: str = ""  # the replica that answered
    error: str = ""  # why it failed


def run_load(
    send: Callable[[int], str], requests: int, concurrency: int, kill_at: int | None, kill: Callable[[], None]
) -> tuple[Run, list[Outcome], float | None]:
    """``requests`` calls of ``send(i)`` (which returns the replica that answered), ``concurrency`` at a time;
    the replica is killed as call ``kill_at`` is sent. Returns the run, each call's outcome and the kill's time."""
    killed: list[float] = []
    lock = threading.Lock()

    def timed(i: int) -> Outcome:
        if i == kill_at:
            with lock:
                kill()
                killed.append(monotonic())
        sent, start = monotonic(), perf_counter()
        try:
            served_by = send(i)
        except Exception as e:  # noqa: BLE001 - a lost frame is what this measures
            return Outcome(sent, (perf_counter() - start) * 1e3, False, error=str(e)[:200])
        return Outcome(sent, (perf_counter() - start) * 1e3, True, served_by)

    start = perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(timed, range(requests)))
    wall_s = perf_counter() - start
    return Run([o.ms for o in outcomes if o.ok], wall_s), outcomes, (killed or [None])[0]


def run_with(
    engine: str, load: str, replicas: int, requests: int, concurrency: int, kill_one_at: float | None
) -> dict[str, Any]:
    checkpoint = str(default_checkpoint(ARCH, SPLIT_POINT))
    tier_of = edge_tier if engine == "edge" else serve_ray_tier
    with (
        tier_of(checkpoint, replicas) as tier,
        sender(load, checkpoint, tier.target, concurrency, pings=engine == "edge") as send,
    ):
        run_load(send, 2 * concurrency, concurrency, None, tier.kill_one)  # warm-up
        kill_at = None if kill_one_at is None else int(kill_one_at * requests)
        run, outcomes, killed = run_load(send, requests, concurrency, kill_at, tier.kill_one)
    failed = [o for o in outcomes if not o.ok]
    if len(failed) == requests:
        raise RuntimeError(f"every request failed, e.g. {failed[0].error}")
    return {
        "engine": engine,
        "load": load,
        "replicas": replicas,
        "requests": requests,
        "ok": requests - len(failed),
        "requests_per_s": run.requests_per_s,
        "p50_ms": run.percentile(50),
        "p99_ms": run.percentile(99),
        "per_replica": sorted(Counter(o.served_by for o in outcomes if o.ok).values(), reverse=True),
        "failed_sent_before_kill": sum(killed is not None and o.sent <= killed for o in failed),
        "failed_sent_after_kill": sum(killed is not None and o.sent > killed for o in failed),
        "failures": sorted({o.error for o in failed})[:3],
    }


@contextmanager
def sender(
    load: str, checkpoint: str, target: str, concurrency: int, pings: bool = True
) -> Iterator[Callable[[int], str]]:
    """``send(i)``: one frame (or upload) through the tier; returns the name of the replica that ran it. ``pings``:
    the device's keepalive pings, off in front of Serve, whose proxy closes a connection that pings often
    (docs/deploy.md)."""
    images = [synthetic_png(i) for i in range(8)]
    if load == "frames":
        head = HeadRunner.load(checkpoint)
        frames = [head.run(image).frame for image in images]
        with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:  # a device's channel
            stub = pb_grpc.SplitInferenceStub(channel)
            yield lambda i: stub.Infer(frames[i % len(frames)], timeout=30).served_by
        return
    port = free_port()
    device = spawn(
        "device",
        "--checkpoint",
        checkpoint,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--edge-address",
        target,
        *(() if pings else ("--edge-keepalive-s", "0")),
        **QUIET,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", device)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=60, limits=httpx.Limits(max_connections=concurrency)
        ) as client:

            def classify(i: int) -> str:
                answer = client.post("/classify", files={"file": ("x.png", images[i % len(images)], "image/png")})
                answer.raise_for_status()
                return answer.json()["edge_replica"]

            yield classify
    finally:
        stop_all([device])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["edge", "serve-ray"], default="edge")
    parser.add_argument("--load", choices=["frames", "uploads"], default="frames")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kill-one-at", type=float, help="kill one replica after this fraction of the frames")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [
        run_with(args.engine, args.load, n, args.requests, args.concurrency, args.kill_one_at) for n in args.replicas
    ]
    base = rows[0]["requests_per_s"]
    for row in rows:
        row["throughput_vs_first"] = row["requests_per_s"] / base
    if args.json:
        print(json.dumps({"cpu_cores": os.cpu_count(), "rows": rows}, indent=2))
        return
    print(
        f"{os.cpu_count()} CPU cores; {args.engine}, {args.load}; RB8 demo model, one torch thread per replica, "
        f"concurrency {args.concurrency}"
    )
    print(
        f"{'replicas':>8} {'ok':>5} {'per s':>7} {'x first':>7} {'p50 ms':>7} {'p99 ms':>7}  per replica"
        + ("  lost (sent before / after the kill)" if args.kill_one_at is not None else "")
    )
    for r in rows:
        lost = (
            f"  {r['failed_sent_before_kill']} / {r['failed_sent_after_kill']}" if args.kill_one_at is not None else ""
        )
        print(
            f"{r['replicas']:>8} {r['ok']:>5} {r['requests_per_s']:7.1f} {r['throughput_vs_first']:7.2f} "
            f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f}  {r['per_replica']}{lost}"
        )
    for r in rows:
        for failure in r["failures"]:
            print(f"  {r['replicas']} replicas, a failure: {failure}", file=sys.stderr)


if __name__ == "__main__":
    main()
