"""``sbn serve-ray``: the tail on a local Ray instance behind Serve's gRPC proxy, called over real gRPC as ``sbn edge``
is: the same logits as ``sbn edge`` for the same frames, frames batched and spread over the replicas, bad frames
refused with the same statuses, and ``sbn device`` (its keepalive pings off) classifying through it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import torch

pytest.importorskip("ray.serve", reason="needs the [ray] extra (pip install '.[ray]'), which `make test` installs")

from bench.replica_bench import serve_replica_pids, wait_for_replicas  # noqa: E402
from spikebottlenet.device.head_runner import HeadRunner  # noqa: E402
from spikebottlenet.sbn.bench import synthetic_png  # noqa: E402
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint, read_checkpoint_info
from spikebottlenet.shared.ports import port_in_use  # noqa: E402
from spikebottlenet.shared.processes import spawn, stop, wait_for_edge  # noqa: E402
from spikebottlenet.v1 import split_inference_pb2 as pb  # noqa: E402
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc  # noqa: E402
from tests.stack import altered, device_process, monolithic_logits, start_edge, upload  # noqa: E402

pytestmark = pytest.mark.slow

RB8 = default_checkpoint("spiking_resnet50", 8)
REPLICAS = 2
# Ray starts a dozen services of its own after the test has chosen Serve's ports, each on a port the OS picks from
# its ephemeral range, and its workers on 10002-19999; a port taken from either while free could be gone when the
# proxy binds it (seen once: the proxy's HTTP port went to one of Ray's). Serve's ports come from between the two.
SERVE_PORTS = range(20000, 32768)


def serve_port() -> int:
    """A port free now, outside both Ray's worker range and the OS's ephemeral one (Linux: 32768-60999)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(SERVE_PORTS, len(SERVE_PORTS)):
        if port < low and not port_in_use("127.0.0.1", port):
            return port
    raise RuntimeError(f"no free port in {SERVE_PORTS} below the ephemeral range ({low})")


def model_info(address: str, timeout_s: float = 2.0) -> pb.ModelInfo:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.SplitInferenceStub(channel).GetModelInfo(pb.ModelInfoRequest(), timeout=timeout_s)


@dataclass
class ServeRay:
    address: str
    process: subprocess.Popen[bytes]

    def replica_pids(self) -> list[int]:
        return serve_replica_pids(self.process.pid)


@pytest.fixture(scope="module")
def frames() -> list[pb.SpikeFrame]:
    head = HeadRunner.load(RB8)
    return [head.run(synthetic_png(seed)).frame for seed in range(8)]


@pytest.fixture(scope="module")
def serve_ray(frames: list[pb.SpikeFrame]) -> Iterator[ServeRay]:
    """``python -m spikebottlenet serve-ray`` with two replicas on its own local Ray instance, once both take frames
    through the proxy."""
    port = serve_port()
    # half a CPU each: two replicas fit a two-core machine's Ray; a 20 ms batch window makes concurrent frames meet;
    # the checkpoint by a relative path, which the replicas (working elsewhere) must still find
    process = spawn(
        "serve-ray",
        "--checkpoint",
        os.path.relpath(RB8),
        "--port",
        str(port),
        "--http-port",
        str(serve_port()),
        "--replicas",
        str(REPLICAS),
        "--cpus-per-replica",
        "0.5",
        "--batch-max-wait-ms",
        "20",
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_for_replicas(address, frames[0], REPLICAS, process)
        yield ServeRay(address, process)
    finally:
        stopped = stop(process, grace_s=60)
    assert stopped == 0  # it shut Serve and its Ray instance down cleanly


def logits_of(reply: pb.Logits) -> torch.Tensor:
    return torch.tensor(reply.values).reshape(reply.batch_size, reply.num_classes)


def test_the_same_logits_as_sbn_edge_for_the_same_frames(serve_ray: ServeRay, frames: list[pb.SpikeFrame]) -> None:
    edge = start_edge(RB8)
    try:
        wait_for_edge(edge.address, edge.process)
        with grpc.insecure_channel(edge.address) as to_edge, grpc.insecure_channel(serve_ray.address) as to_serve:
            for frame in frames:
                expected = pb_grpc.SplitInferenceStub(to_edge).Infer(frame, timeout=10)
                reply = pb_grpc.SplitInferenceStub(to_serve).Infer(frame, timeout=10)
                assert reply.request_id == frame.request_id and reply.model_fingerprint == frame.model_fingerprint
                # one frame at a time: batch 1 on both sides, the same tail code on the same weights
                assert torch.equal(logits_of(reply), logits_of(expected))
    finally:
        stop(edge.process)
    info = model_info(serve_ray.address)
    assert info.model_fingerprint == read_checkpoint_info(RB8).fingerprint
    assert [m.model_fingerprint for m in info.models] == [info.model_fingerprint]


def test_concurrent_frames_are_batched_and_spread_over_the_replicas(
    serve_ray: ServeRay, frames: list[pb.SpikeFrame]
) -> None:
    with grpc.insecure_channel(serve_ray.address) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)
        alone = [logits_of(stub.Infer(frame, timeout=10)) for frame in frames]
        sent = [frames[i % len(frames)] for i in range(48)]
        replies = [call.result() for call in [stub.Infer.future(frame, timeout=30) for frame in sent]]
    assert max(reply.timing.batch_images for reply in replies) > 1  # @serve.batch put frames together
    assert len({reply.served_by for reply in replies}) == REPLICAS
    for i, reply in enumerate(replies):
        assert reply.request_id == sent[i].request_id
        # batched rows equal the frame's own run (the spiking convs are batch-invariant; see shared/layers.py)
        assert torch.allclose(logits_of(reply), alone[i % len(frames)], atol=1e-5)


def test_bad_frames_are_refused_as_sbn_edge_refuses_them(serve_ray: ServeRay, frames: list[pb.SpikeFrame]) -> None:
    frame = frames[0]
    with grpc.insecure_channel(serve_ray.address) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)
        with pytest.raises(grpc.RpcError) as bad_shape:
            stub.Infer(altered(frame, shape=[4, 1, 3, 3, 3]), timeout=10)
        assert bad_shape.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not match this model's spikes" in bad_shape.value.details()
        with pytest.raises(grpc.RpcError) as foreign:
            stub.Infer(altered(frame, model_fingerprint="0" * 64), timeout=10)
        assert foreign.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "which this edge does not serve" in foreign.value.details()
        with pytest.raises(grpc.RpcError) as truncated:
            stub.Infer(altered(frame, payload=frame.payload[:-3]), timeout=10)
        assert truncated.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "payload does not decode" in truncated.value.details()
        assert stub.Infer(frame, timeout=10).batch_size == 1  # and the replicas go on


def test_a_device_classifies_through_serve(serve_ray: ServeRay) -> None:
    image = synthetic_png(3)
    expected = read_checkpoint_info(RB8).config.label(int(monolithic_logits(RB8, image).argmax()))
    # no keepalive pings, as docs/deploy.md says for Serve: its proxy closes a connection that pings often
    with device_process(RB8, serve_ray.address, "--edge-keepalive-s", "0") as url:
        assert httpx.get(f"{url}/readyz", timeout=30).json()["status"] == "ready"
        answer = httpx.post(f"{url}/classify", files=upload(image), timeout=30).json()
        assert answer["label"] == expected and answer["edge_replica"].startswith("spikebottlenet#TailReplica#")
        streamed = httpx.post(f"{url}/classify", params={"stream": "true"}, files=upload(image), timeout=30).json()
        assert streamed["label"] == expected
        assert streamed["time_steps_sent"] == read_checkpoint_info(RB8).config.time_steps


def test_a_stream_out_of_order_is_refused(serve_ray: ServeRay, frames: list[pb.SpikeFrame]) -> None:
    frame = frames[0]
    step = pb.SpikeStep(
        request_id="s",
        model_fingerprint=frame.model_fingerprint,
        split_point=frame.split_point,
        shape=frame.shape,
        codec=pb.CODEC_RAW,
        step=1,
        payload=b"",
    )
    with grpc.insecure_channel(serve_ray.address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(pb_grpc.SplitInferenceStub(channel).InferStream(iter([step]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "out of order" in refused.value.details()


def test_a_killed_replica_loses_no_later_frame_and_is_replaced(
    serve_ray: ServeRay, frames: list[pb.SpikeFrame]
) -> None:
    before = serve_ray.replica_pids()
    assert len(before) == REPLICAS
    killed = min(before)
    os.kill(killed, signal.SIGKILL)
    with grpc.insecure_channel(serve_ray.address) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)
        # sent after the kill: Serve routes them to the replica still up (the controller marks a crashed actor
        # unhealthy at once), so none is lost
        replies = [stub.Infer(frames[i % len(frames)], timeout=10) for i in range(40)]
        assert all(reply.batch_size == 1 for reply in replies)
        deadline = time.monotonic() + 120
        while len(after := serve_ray.replica_pids()) < REPLICAS or killed in after:  # Serve starts a replacement
            assert time.monotonic() < deadline, f"no replacement replica after 120 s: {after}"
            time.sleep(0.5)
        served_by: set[str] = set()
        while len(served_by) < REPLICAS:  # and the replacement takes frames once it has loaded its tail
            assert time.monotonic() < deadline, f"frames reached only {served_by}"
            served_by.update(call.result().served_by for call in [stub.Infer.future(f, timeout=10) for f in frames])


def test_autoscaling_adds_a_replica_under_load(frames: list[pb.SpikeFrame]) -> None:
    """From one replica, aiming at 2 frames in flight each: 16 at once for a few seconds bring the second."""
    port = serve_port()
    # Serve's load reports every 10 s by default; every second here, so that the test takes seconds, not minutes
    env = {
        **os.environ,
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    }
    process = spawn(
        "serve-ray",
        "--checkpoint",
        str(RB8),
        "--port",
        str(port),
        "--http-port",
        str(serve_port()),
        "--min-replicas",
        "1",
        "--max-replicas",
        "2",
        "--target-frames-per-replica",
        "2",
        "--upscale-delay-s",
        "1",
        "--cpus-per-replica",
        "0.5",
        env=env,
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_for_replicas(address, frames[0], 1, process)
        deadline = time.monotonic() + 120
        assert len(serve_replica_pids(process.pid)) == 1
        served_by: set[str] = set()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.SplitInferenceStub(channel)
            while len(served_by) < 2:
                assert time.monotonic() < deadline, "no second replica took frames under load"
                calls = [stub.Infer.future(frames[i % len(frames)], timeout=30) for i in range(16)]
                served_by.update(call.result().served_by for call in calls)
        assert len(serve_replica_pids(process.pid)) == 2
    finally:
        stop(process, grace_s=60)
