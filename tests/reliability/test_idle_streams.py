"""Idle InferStream calls against an edge process: 64 streams from one client that send nothing.

On the thread-per-call edge they took the whole edge down: each held a gRPC thread, and at 36 (32 slots + 4
spare threads) health checks, GetModelInfo and Infer were all refused RESOURCE_EXHAUSTED. Now a call holds no
thread (grpc.aio), the client's streams beyond max_streams_per_peer are refused, and those admitted are cancelled
once stream_step_s passes without a first step; meanwhile everything else answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port, stop_all, wait_for_edge
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import EdgeProcess, monolithic_logits, scraped, start_edge

IDLE = 64
PER_PEER = 48  # more than the 36 idle calls that took the thread-per-call edge down, fewer than IDLE
# Long enough that the checks below, milliseconds each, finish while the streams are open even on a busy machine
# (the open-streams gauge, read after them, confirms it); the cancellations are timed against it.
FIRST_STEP_S = 4.0
CUT_MARGIN_S = 2.0  # a cancellation may come this much after FIRST_STEP_S (the edge's timer, a loaded machine)


@dataclass
class Ended:
    seconds: float  # after the call was opened
    code: grpc.StatusCode
    details: str


@pytest.fixture(scope="module")
def stream_edge(checkpoint: Path) -> Iterator[tuple[EdgeProcess, str]]:
    """An edge with a smaller per-client stream limit than idle streams opened, and its metrics URL."""
    metrics_port = free_port()
    edge = start_edge(
        checkpoint,
        None,
        "--max-streams-per-peer",
        str(PER_PEER),
        "--stream-step-s",
        str(FIRST_STEP_S),
        "--metrics-port",
        str(metrics_port),
    )
    try:
        wait_for_edge(edge.address, edge.process)
        yield edge, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        stop_all([edge.process])


def open_idle_streams(address: str, n: int, release: threading.Event) -> tuple[list[grpc.Channel], list[Ended]]:
    """``n`` InferStream calls, each on a connection of its own, that send nothing until ``release``; their ends
    are appended to the list as they come."""
    ended: list[Ended] = []
    channels = [grpc.insecure_channel(address) for _ in range(n)]

    def nothing() -> Iterator[pb.SpikeStep]:
        release.wait(60)
        yield from ()

    for channel in channels:
        opened = time.monotonic()
        call = pb_grpc.SplitInferenceStub(channel).InferStream(nothing(), timeout=60)
        call.add_done_callback(lambda c, t=opened: ended.append(Ended(time.monotonic() - t, c.code(), c.details())))
    return channels, ended


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_idle_streams_take_nothing_from_other_calls_and_are_cut_after_the_first_step_timeout(
    stream_edge: tuple[EdgeProcess, str], checkpoint: Path, report: Callable[[str], None]
) -> None:
    edge, metrics_url = stream_edge
    head = HeadRunner.load(checkpoint)
    frame = head.run(synthetic_png()).frame
    reference = monolithic_logits(checkpoint, synthetic_png())
    release = threading.Event()
    channels, ended = open_idle_streams(edge.address, IDLE, release)
    try:
        # the streams over the limit are refused at once, naming it; the others stay open, sending nothing
        assert wait_for(lambda: len(ended) >= IDLE - PER_PEER, 10)
        refused = list(ended)
        assert len(refused) == IDLE - PER_PEER and all(
            e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and f"max_streams_per_peer = {PER_PEER}" in e.details
            for e in refused
        ), refused
        assert wait_for(lambda: scraped(metrics_url, "sbn_edge_open_streams") == PER_PEER, 10)

        with grpc.insecure_channel(edge.address) as channel:
            stub = pb_grpc.SplitInferenceStub(channel)
            start = time.monotonic()
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            info = stub.GetModelInfo(pb.ModelInfoRequest(), timeout=5)
            reply = stub.Infer(frame, timeout=5)
            answered_s = time.monotonic() - start
        assert scraped(metrics_url, "sbn_edge_open_streams") == PER_PEER, "the idle streams ended before the checks"
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert info.model_fingerprint == frame.model_fingerprint
        torch.testing.assert_close(torch.tensor(reply.values), reference, rtol=0, atol=1e-5)

        assert wait_for(lambda: len(ended) == IDLE, FIRST_STEP_S + CUT_MARGIN_S + 5)
        cut = ended[len(refused) :]
        assert all(e.code == grpc.StatusCode.CANCELLED and "stream_step_s" in e.details for e in cut), cut
        assert all(FIRST_STEP_S <= e.seconds <= FIRST_STEP_S + CUT_MARGIN_S for e in cut), [e.seconds for e in cut]
        assert wait_for(lambda: scraped(metrics_url, "sbn_edge_open_streams") == 0, 5)
    finally:
        release.set()
        for channel in channels:
            channel.close()

    # the client's stream count came back: it streams a frame as a device does, and gets the model's answer
    stream = head.open_stream(synthetic_png())
    steps = [stream.step() for _ in range(stream.time_steps)]
    with grpc.insecure_channel(edge.address) as channel:
        replies = list(pb_grpc.SplitInferenceStub(channel).InferStream(iter(steps), timeout=30))
    assert [r.step for r in replies] == list(range(len(steps)))
    torch.testing.assert_close(torch.tensor(replies[-1].values), reference, rtol=0, atol=1e-5)
    seconds = sorted(e.seconds for e in cut)
    report(
        f"idle streams: {IDLE} InferStream calls from one client sending nothing (the thread-per-call edge "
        f"refused everything from 36 on): {len(refused)} over max_streams_per_peer={PER_PEER} refused "
        f"RESOURCE_EXHAUSTED at once; with {PER_PEER} open, health, GetModelInfo and a correct Infer answered in "
        f"{answered_s * 1e3:.0f} ms together; all {len(cut)} cancelled {seconds[0]:.2f}-{seconds[-1]:.2f} s after "
        f"opening (stream_step_s={FIRST_STEP_S:g}); then the same client streamed a frame correctly"
    )
