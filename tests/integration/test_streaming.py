"""Streaming over time steps through real processes: a device sending one step per message over InferStream, an
``sbn edge`` answering each with the running logits, and early exit."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.codec import raw_length
from spikebottlenet.shared.preprocess import load_image
from spikebottlenet.shared.processes import free_port, stop_all, wait_for_edge
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import device_client, scraped, start_edge, upload

RB8 = default_checkpoint("spiking_resnet50", 8)  # T = 4, spikes [4, B, 8, 8, 8]: a raw step is 64 bytes
STEP_BYTES = raw_length((1, 1, 8, 8, 8))


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[str, int]]:
    """The edge's gRPC address and its metrics port."""
    metrics_port = free_port()
    process = start_edge(RB8, None, "--metrics-port", str(metrics_port))
    try:
        wait_for_edge(process.address, process.process)
        yield process.address, metrics_port
    finally:
        stop_all([process.process])


@pytest.fixture(scope="module")
def client(edge: tuple[str, int]) -> Iterator[httpx.Client]:
    with device_client(RB8, edge[0]) as client:
        yield client


def classify(client: httpx.Client, image: bytes, **params: str) -> dict:
    response = client.post("/classify", params={"logits": "true", **params}, files=upload(image))
    assert response.status_code == 200, response.text
    return response.json()


def running_logits(image: bytes, steps: int) -> torch.Tensor:
    """The reference for a stream stopped after ``steps`` steps, on another code path: the whole model's head in
    this process (multi-step), then its tail on the first ``steps`` steps as a frame of their own."""
    loaded = load_checkpoint(RB8, "full")
    with torch.inference_mode():
        spikes = loaded.model.head(torch.from_numpy(load_image(image, loaded.config)).unsqueeze(0))
        return loaded.model.tail(spikes[:steps])[0]


def test_a_stream_without_early_exit_gives_the_unary_answer_bit_for_bit(client: httpx.Client) -> None:
    for seed in range(4):
        image = synthetic_png(seed)
        unary, streamed = classify(client, image), classify(client, image, stream="true")
        assert streamed["logits"] == unary["logits"]  # float32 values, compared exactly
        assert (streamed["time_steps_sent"], streamed["time_steps_computed"]) == (4, 4)
        assert streamed["transmitted_bytes"] == unary["transmitted_bytes"] == 4 * STEP_BYTES
        # the energy of the same spikes, counted one step at a time
        assert streamed["energy"]["device_45nm_mj"] == pytest.approx(unary["energy"]["device_45nm_mj"], rel=1e-9)
        assert streamed["energy"]["ann_baseline_45nm_mj"] == unary["energy"]["ann_baseline_45nm_mj"]


def large_png(size: int = 3000) -> bytes:
    """A horizontal grey ramp, ``size`` pixels square: a small upload (it compresses to ~30 KB) whose decode takes
    a few hundred milliseconds, far more than the head's steps."""
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([np.tile(ramp, (size, 1))] * 3, axis=-1)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_streamed_answers_device_time_covers_decoding_the_upload(client: httpx.Client) -> None:
    decoding = {"url": f"{client.base_url}/metrics", "name": "sbn_device_stage_seconds_sum", "stage": "preprocess"}
    before = scraped(**decoding)
    streamed = classify(client, large_png(), stream="true")
    decode_ms = (scraped(**decoding) - before) * 1e3  # this request's decode, as the device measured it
    # as an unstreamed answer's does (Latency.device): decoding, then the head's steps
    assert decode_ms > 0 and streamed["latency_ms"]["device"] > decode_ms


@pytest.mark.parametrize("codec", ["auto", "entropy"])
def test_steps_packed_by_any_codec_give_the_unary_answer(edge: tuple[str, int], codec: str) -> None:
    # auto may pack a silent step sparse and a busy one raw; entropy takes its contexts from the step before
    with device_client(RB8, edge[0], codec=codec) as client:
        for seed in range(4):
            image = synthetic_png(seed)
            unary, streamed = classify(client, image), classify(client, image, stream="true")
            assert streamed["logits"] == unary["logits"] and streamed["time_steps_sent"] == 4
            assert streamed["transmitted_bytes"] < 4 * STEP_BYTES + 4 * 16  # each step no longer than raw (+ slack)


def test_early_exit_stops_at_the_first_confident_step_and_counts_what_was_sent(client: httpx.Client) -> None:
    stopped = 0
    for seed in range(8):
        image = synthetic_png(seed)
        full = classify(client, image, stream="true")
        early = classify(client, image, early_exit="0.5")
        steps = early["time_steps_sent"]
        assert early["early_exit"] == 0.5 and 1 <= steps <= 4
        assert torch.equal(torch.tensor(early["logits"]), running_logits(image, steps))  # bit for bit
        probabilities = [running_logits(image, t).softmax(0).max().item() for t in range(1, 5)]
        assert all(p < 0.5 for p in probabilities[: steps - 1])  # no earlier step was confident ...
        assert probabilities[steps - 1] >= 0.5 or steps == 4  # ... and this one is, unless it is the last
        assert early["transmitted_bytes"] == steps * STEP_BYTES  # raw: one step's bytes per step sent
        # the head worked ahead by at most one step, and its energy is that of the steps it computed
        computed = early["time_steps_computed"]
        assert computed in (steps, steps + 1) and computed <= 4
        if computed < 4:
            assert early["energy"]["device_45nm_mj"] < full["energy"]["device_45nm_mj"]
        stopped += steps < 4
    assert stopped  # the synthetic images give the narrow model's running mean a confident class early at 0.5


def test_a_stream_cut_off_by_the_device_frees_the_edges_state(edge: tuple[str, int]) -> None:
    address, metrics_port = edge
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    cut = threading.Event()

    def two_steps_then_silence() -> Iterator[pb.SpikeStep]:  # a device that stops sending without closing
        yield from steps_of(1, 2)
        cut.wait(30)

    with grpc.insecure_channel(address) as channel:
        call = pb_grpc.SplitInferenceStub(channel).InferStream(two_steps_then_silence(), timeout=30)
        replies = [next(call), next(call)]  # two steps answered; the edge now holds the stream's state
        assert [r.step for r in replies] == [0, 1]
        assert scraped(metrics_url, "sbn_edge_open_streams") == 1
        call.cancel()
        cut.set()
    for _ in range(100):  # the edge's handler ends with the cancel, and the stream's state with it
        if scraped(metrics_url, "sbn_edge_open_streams") == 0:
            break
        time.sleep(0.05)
    assert scraped(metrics_url, "sbn_edge_open_streams") == 0


def test_a_stream_cancelled_before_its_first_message_leaves_nothing_behind(edge: tuple[str, int]) -> None:
    address, metrics_port = edge
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    cut = threading.Event()

    def nothing() -> Iterator[pb.SpikeStep]:
        cut.wait(30)
        yield from ()

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)
        call = stub.InferStream(nothing(), timeout=30)
        call.cancel()
        cut.set()
        assert scraped(metrics_url, "sbn_edge_open_streams") == 0
        assert [r.step for r in stub.InferStream(iter(steps_of(4, 4)), timeout=30)] == [0, 1, 2, 3]


def steps_of(seed: int, count: int) -> list[pb.SpikeStep]:
    stream = HeadRunner.load(RB8).open_stream(synthetic_png(seed))
    return [stream.step() for _ in range(count)]


def copy(message: pb.SpikeStep, **fields: object) -> pb.SpikeStep:
    changed = pb.SpikeStep()
    changed.CopyFrom(message)
    for name, value in fields.items():
        if name == "shape":
            changed.shape[:] = value
        else:
            setattr(changed, name, value)
    return changed


# the messages of a stream gone wrong, and what the refusal must name
DISAGREEING = {
    "another model midway": (
        lambda s: [s[0], copy(s[1], model_fingerprint="ab" * 32)],
        ["step 1", "model_fingerprint"],
    ),
    "another shape midway": (lambda s: [s[0], copy(s[1], shape=[4, 2, 4, 8, 8])], ["step 1", "shape"]),
    "a step skipped": (lambda s: [s[0], copy(s[2], step=2)], ["step 2 out of order", "expects step 1"]),
    "a step repeated": (lambda s: [s[0], copy(s[1], step=0)], ["step 0 out of order", "expects step 1"]),
    "too many steps": (lambda s: [*s, copy(s[3], step=4)], ["too many steps", "T = 4"]),
    "a first message naming no shape": (lambda s: [copy(s[0], shape=[])], ["5 entries"]),
}


@pytest.mark.parametrize("make, words", DISAGREEING.values(), ids=DISAGREEING.keys())
def test_a_stream_whose_messages_disagree_is_refused_naming_the_problem(
    edge: tuple[str, int],
    make,  # type: ignore[no-untyped-def]
    words: list[str],
) -> None:
    messages = make(steps_of(2, 4))
    with grpc.insecure_channel(edge[0]) as channel:
        call = pb_grpc.SplitInferenceStub(channel).InferStream(iter(messages), timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            for _ in call:
                pass
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in refused.value.details()


def test_the_stream_of_a_checkpoint_the_edge_does_not_serve_is_refused(edge: tuple[str, int]) -> None:
    first = copy(steps_of(3, 1)[0], model_fingerprint="cd" * 32)
    with grpc.insecure_channel(edge[0]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(pb_grpc.SplitInferenceStub(channel).InferStream(iter([first]), timeout=30))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
