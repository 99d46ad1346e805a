"""``sbn up``: edge and device as two local child processes, without Docker.

    sbn up -> python -m sbn edge    gRPC on 127.0.0.1:50051   started first, waited on until SERVING
           -> python -m sbn device  HTTP on 127.0.0.1:8000    started once the edge is healthy

Both run the embedded demo checkpoint unless ``--checkpoint`` names another; every other setting
reaches them through their environment variables (SBN_EDGE_*, SBN_DEVICE_*), which they inherit.
Ctrl-C or SIGTERM stops both, device first so no request it still holds loses its edge; if either
exits on its own, the other is stopped and ``sbn up`` exits with a failure status.

The helpers (local_stack, spawn, wait_for_edge, wait_for_http, stop) are also how the tests and
``sbn bench`` run the two processes.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.backbones import ARCH_CHOICES, DEFAULT_ARCH
from shared.codec import CODEC_CHOICES
from shared.rpc.wire import SERVICE_NAME
from shared.settings import DEFAULT_SPLIT_POINT

log = logging.getLogger("sbn.up")

POLL_S = 0.2


class ChildExited(RuntimeError):
    """A child process ended while it was expected to start or keep running."""


def spawn(command: str, *flags: str) -> subprocess.Popen[bytes]:
    """``python -m sbn COMMAND FLAGS...`` as a child process sharing this one's output.

    The child gets a session of its own, so a terminal's Ctrl-C reaches only the parent, which then
    stops its children in order instead of all of them being interrupted at once.
    """
    return subprocess.Popen([sys.executable, "-m", "sbn", command, *flags], start_new_session=True)


def _wait(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise ChildExited(f"{what} exited with status {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def wait_for_edge(address: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0,
                  credentials: grpc.ChannelCredentials | None = None) -> None:
    """Until the edge's gRPC health service reports SplitInference as SERVING; over TLS with ``credentials``."""
    with grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1.0)
            except grpc.RpcError:  # not listening yet
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        _wait(serving, f"edge at {address}", process, timeout_s)


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Until GET ``url`` answers 200."""

    def ok() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):  # refused, reset, or an error status
            return False

    _wait(ok, f"service at {url}", process, timeout_s)


def stop(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``; returns the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop in reverse start order; whatever an interruption (a second Ctrl-C) leaves running is killed."""
    try:
        for process in reversed(processes):
            stop(process)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def free_port() -> int:
    """A port nothing listens on right now, picked by the OS (another process could still take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_stack(checkpoint: Path | None = None, split_point: int = DEFAULT_SPLIT_POINT, host: str = "127.0.0.1",
                port: int = 8000, edge_port: int = 50051, device_flags: Sequence[str] = (),
                arch: str = DEFAULT_ARCH) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The edge, then, once it is healthy, the device; both stopped on leaving, device first.

    Yields [edge, device] when the device answers /healthz.
    """
    model = ["--arch", arch, "--split-point", str(split_point),
             *(["--checkpoint", str(checkpoint)] if checkpoint else [])]
    edge_address = f"127.0.0.1:{edge_port}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        children.append(edge := spawn("edge", "--host", "127.0.0.1", "--port", str(edge_port), *model))
        wait_for_edge(edge_address, edge)
        children.append(device := spawn("device", "--host", host, "--port", str(port), "--edge-address",
                                        edge_address, *model, *device_flags))
        wait_for_http(f"http://{host}:{port}/healthz", device)
        yield children
    finally:
        stop_all(children)


def add_model_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """--checkpoint, or --arch and --split-point choosing an embedded demo model (``sbn models`` lists them)."""
    parser.add_argument("--checkpoint", type=Path,
                        help=f"checkpoint to {verb}; default: the embedded demo model for --arch and --split-point")
    parser.add_argument("--arch", choices=ARCH_CHOICES, default=DEFAULT_ARCH,
                        help=f"backbone of the embedded demo model (default: {DEFAULT_ARCH})")
    parser.add_argument("--split-point", type=int, default=DEFAULT_SPLIT_POINT, metavar="K",
                        help=f"split point of the embedded demo model (default: {DEFAULT_SPLIT_POINT}); "
                             "`sbn models` lists them")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, "serve")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address of the device (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the device (default: 8000)")
    parser.add_argument("--edge-port", type=int, default=50051, help="gRPC port of the edge (default: 50051)")
    parser.add_argument("--codec", choices=CODEC_CHOICES, help="spike codec of the device (default: its setting, raw)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # SIGTERM takes the same way out as Ctrl-C: KeyboardInterrupt, then the children are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with local_stack(args.checkpoint, args.split_point, args.host, args.port, args.edge_port,
                         ["--codec", args.codec] if args.codec else [], args.arch) as children:
            url = f"http://{args.host}:{args.port}"
            log.info("up: try  curl -F file=@image.png %s/classify   (docs: %s/docs; Ctrl-C stops both)", url, url)
            while all(child.poll() is None for child in children):
                time.sleep(POLL_S)
            for name, child in zip(("edge", "device"), children, strict=True):
                if child.returncode is not None:
                    log.error("%s exited with status %d; stopping", name, child.returncode)
            return 1
    except (ChildExited, TimeoutError) as e:
        log.error("%s; stopping", e)
        return 1
    except KeyboardInterrupt:
        log.info("stopped device and edge")
        return 0
