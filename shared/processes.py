"""Local service processes: ``python -m spikebottlenet edge|device`` started as children, waited on until they
serve, and stopped. ``sbn up``, ``sbn bench``, the benchmarks and the tests all run the two halves this way.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .errors import SpikeBottleNetError
from .rpc.wire import SERVICE_NAME

POLL_S = 0.2


class ChildExited(SpikeBottleNetError, RuntimeError):
    """A child process ended while it was expected to start or keep running."""


def spawn(
    command: str, *flags: str, env: Mapping[str, str] | None = None, stdout: int | None = None
) -> subprocess.Popen[bytes]:
    """``python -m spikebottlenet COMMAND FLAGS...`` as a child process sharing this one's output.

    The child gets a session of its own, so a terminal's Ctrl-C reaches only the parent, which then
    stops its children in order instead of all of them being interrupted at once. It inherits this
    process's environment, or gets ``env`` instead. ``stdout=subprocess.DEVNULL`` (or a file
    descriptor) keeps its standard output, uvicorn's access log, out of a parent's own output.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "spikebottlenet", command, *flags],
        start_new_session=True,
        env=None if env is None else dict(env),
        stdout=stdout,
    )


def _wait(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise ChildExited(f"{what} exited with status {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def wait_for_edge(
    address: str,
    process: subprocess.Popen[bytes],
    timeout_s: float = 60.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Until the edge's gRPC health service reports SplitInference as SERVING; over TLS with ``credentials``."""
    with grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                # typeshed's HealthStub (types-grpcio-health-checking) leaves out the methods that the generated
                # stub sets in its __init__
                reply = health.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1.0
                )
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
