"""Hostile gRPC messages against an edge process whose log is read: bytes that are no protobuf message at all, and a
request id longer than any device sends.

A malformed message is refused with INVALID_ARGUMENT and one line in the edge's log (gRPC's own deserializer
failure answered INTERNAL and logged a 6-line traceback for each). A request id over MAX_REQUEST_ID_LENGTH is
refused with INVALID_ARGUMENT naming the limit before the tail runs (a 12 KB id used to run the model and then fail
the reply: "Sent message larger than max").
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import torch

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port, stop_all, wait_for_edge
from spikebottlenet.shared.rpc.wire import MAX_REQUEST_ID_LENGTH, SERVICE_NAME
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import EdgeProcess, altered, monolithic_logits, scraped

# Not protobuf: a field key with a reserved wire type; a length prefix longer than what follows; a varint that
# never ends.
MALFORMED = [b"\xff\xff\xff\xff", b"\x0a\x80\x01abc", b"\x08" + b"\xff" * 11]


class LoggedEdge:
    """``sbn edge`` on a free port with its log (stderr) in a file, and its metrics URL."""

    def __init__(self, checkpoint: Path, log: Path) -> None:
        port, metrics_port = free_port(), free_port()
        self.log = log
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "spikebottlenet",
                    "edge",
                    "--checkpoint",
                    str(checkpoint),
                    "--port",
                    str(port),
                    "--metrics-port",
                    str(metrics_port),
                ],
                start_new_session=True,
                stderr=out,
            )
        self.edge = EdgeProcess(f"127.0.0.1:{port}", process)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def log_since(self, offset: int) -> str:
        return self.log.read_bytes()[offset:].decode()

    def log_size(self) -> int:
        return self.log.stat().st_size


@pytest.fixture(scope="module")
def logged_edge(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedEdge]:
    edge = LoggedEdge(checkpoint, tmp_path_factory.mktemp("edge") / "edge.log")
    try:
        wait_for_edge(edge.edge.address, edge.edge.process)
        yield edge
    finally:
        stop_all([edge.edge.process])


@pytest.fixture(scope="module")
def frame(checkpoint: Path) -> pb.SpikeFrame:
    return HeadRunner.load(checkpoint).run(synthetic_png()).frame


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


def test_a_malformed_message_is_refused_with_one_log_line_and_no_traceback(
    logged_edge: LoggedEdge, checkpoint: Path, frame: pb.SpikeFrame, report: Callable[[str], None]
) -> None:
    mark = logged_edge.log_size()
    with grpc.insecure_channel(logged_edge.edge.address) as channel:  # bytes as they are, no serializer
        infer = channel.unary_unary(f"/{SERVICE_NAME}/Infer")
        stream = channel.stream_stream(f"/{SERVICE_NAME}/InferStream")
        refusals = [refusal(lambda m=message: infer(m, timeout=10)) for message in MALFORMED]
        refusals.append(refusal(lambda: list(stream(iter(MALFORMED[:1]), timeout=10))))
        reply = pb_grpc.SplitInferenceStub(channel).Infer(frame, timeout=10)
    assert all(e.code() == grpc.StatusCode.INVALID_ARGUMENT for e in refusals), refusals
    assert all("not a valid spikebottlenet.v1.Spike" in e.details() for e in refusals), refusals[0].details()
    torch.testing.assert_close(
        torch.tensor(reply.values), monolithic_logits(checkpoint, synthetic_png()), rtol=0, atol=1e-5
    )
    log = logged_edge.log_since(mark)
    lines = [line for line in log.splitlines() if "malformed" in line]
    assert "Traceback" not in log and len(lines) == len(refusals), log
    report(
        f"malformed protobuf: {len(refusals)} messages (Infer and InferStream) refused INVALID_ARGUMENT, "
        f"{len(log.splitlines())} edge log lines in all, no traceback (was INTERNAL and 6 lines with a traceback "
        f"each); the edge answered correctly after"
    )


def test_an_overlong_request_id_is_refused_before_the_tail_runs(
    logged_edge: LoggedEdge, frame: pb.SpikeFrame, checkpoint: Path, report: Callable[[str], None]
) -> None:
    def tail_runs() -> float:
        return scraped(logged_edge.metrics_url, "sbn_edge_tail_batch_frames_count")

    def stream_steps() -> float:
        return scraped(logged_edge.metrics_url, "sbn_edge_stream_steps_total")

    longest, over, huge = ("r" * n for n in (MAX_REQUEST_ID_LENGTH, MAX_REQUEST_ID_LENGTH + 1, 12_000))
    first_step = HeadRunner.load(checkpoint).open_stream(synthetic_png()).step()
    with grpc.insecure_channel(logged_edge.edge.address) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)
        assert stub.Infer(altered(frame, request_id=longest), timeout=10).request_id == longest
        runs, steps = tail_runs(), stream_steps()
        start = time.monotonic()
        refusals = [
            refusal(lambda i=request_id: stub.Infer(altered(frame, request_id=i), timeout=10))
            for request_id in (over, huge)
        ]
        refused_s = time.monotonic() - start
        step = pb.SpikeStep()
        step.CopyFrom(first_step)
        step.request_id = huge
        refusals.append(refusal(lambda: list(stub.InferStream(iter([step]), timeout=10))))
    assert all(e.code() == grpc.StatusCode.INVALID_ARGUMENT for e in refusals), refusals
    assert all(f"at most {MAX_REQUEST_ID_LENGTH} are accepted" in e.details() for e in refusals), refusals[0].details()
    assert (tail_runs(), stream_steps()) == (runs, steps), "the tail ran a frame with an overlong request id"
    assert max(len(line) for line in logged_edge.log.read_text().splitlines()) < 1000  # the id is cut in the log
    report(
        f"overlong request_id: {MAX_REQUEST_ID_LENGTH} characters answered; {MAX_REQUEST_ID_LENGTH + 1} and "
        f"12,000 refused INVALID_ARGUMENT naming the limit in {refused_s * 1e3:.0f} ms for both, the tail not run "
        f'(was: the model ran, then RESOURCE_EXHAUSTED "Sent message larger than max"); a stream\'s first step '
        f"likewise"
    )
