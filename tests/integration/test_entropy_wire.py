"""The entropy codec through real processes: the shipped RB8 model (its context model fitted on MNIST's training
split), a device sending entropy-coded frames, an edge decoding them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch

from spikebottlenet.device.app import create_app
from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.device.settings import DeviceSettings
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.processes import stop_all, wait_for_edge
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import altered, device_client, monolithic_logits, start_edge, upload

RB8 = default_checkpoint("spiking_resnet50", 8)


@pytest.fixture(scope="module")
def edge_address() -> Iterator[str]:
    edge = start_edge(RB8)
    try:
        wait_for_edge(edge.address, edge.process)
        yield edge.address
    finally:
        stop_all([edge.process])


def answers_with_the_monolithic_logits(client: httpx.Client, images: int = 8) -> list[dict]:
    """/classify on ``images`` synthetic digits, each answer checked against the whole model's logits here."""
    answers = []
    for seed in range(images):
        image = synthetic_png(seed)
        response = client.post("/classify", params={"logits": "true"}, files=upload(image))
        assert response.status_code == 200, response.text
        body = response.json()
        torch.testing.assert_close(torch.tensor(body["logits"]), monolithic_logits(RB8, image), rtol=0, atol=1e-5)
        answers.append(body)
    return answers


@pytest.mark.parametrize("codec", ["entropy", "auto"])
def test_entropy_coded_frames_give_the_monolithic_logits_in_fewer_bytes(edge_address: str, codec: str) -> None:
    with device_client(RB8, edge_address, codec=codec) as client:
        answers = answers_with_the_monolithic_logits(client)
    if codec == "entropy":
        assert all(a["codec"] == "entropy" for a in answers)
    raw_bytes = 4 * 8 * 8 * 8 // 8  # T x C' x H' x W' bits
    assert sum(a["transmitted_bytes"] for a in answers) < 8 * raw_bytes
    assert all(a["compression_ratio"] > 16 for a in answers if a["codec"] == "entropy")


def test_a_device_refuses_the_entropy_codec_without_a_fitted_model(calibrated_checkpoint: Callable[..., Path]) -> None:
    with pytest.raises(ValueError, match="fit-codec"):
        create_app(DeviceSettings(checkpoint=calibrated_checkpoint(8), codec="entropy"))


def test_a_lossy_channel_degrades_raw_spikes_and_refuses_damaged_entropy_payloads(edge_address: str) -> None:
    # every bit flipped: a raw frame arrives as the inverted spikes (and is answered), an entropy frame fails its
    # CRC at the edge (502 naming the corruption)
    with device_client(RB8, edge_address, codec="raw", channel="bsc:1") as client:
        assert client.post("/classify", files=upload(synthetic_png())).status_code == 200
    with device_client(RB8, edge_address, codec="entropy", channel="bsc:1") as client:
        response = client.post("/classify", files=upload(synthetic_png()))
    assert response.status_code == 502 and "corrupt entropy payload" in response.json()["detail"]


def test_fec_repairs_what_a_lossy_link_damages_and_the_answer_is_the_clean_one(edge_address: str) -> None:
    # about 1.7 of a frame's ~170 bytes lost per frame; 16 parity bytes per block put right up to 8
    with device_client(
        RB8, edge_address, codec="entropy", entropy_chunks=4, fec_parity_bytes=16, channel="erasure:0.01"
    ) as client:
        damages = [answer["link_damage"] for answer in answers_with_the_monolithic_logits(client)]
    assert all(d["fec_parity_bytes"] == 16 and d["erased_chunks"] == d["fec_failed_blocks"] == 0 for d in damages)
    # the channel did damage (P(none in 8 frames of ~170 bytes) ~ 1e-6), and it was repaired
    assert sum(d["fec_corrected_bytes"] for d in damages) > 0


# Lost bytes as a byte-erasure link delivers them (zeros), their positions reported in lost_bytes. Unary: a tenth
# lost, ~22 of a ~218-byte frame (one block with 48 parity bytes), about what 48 parity bytes correct as errors of
# unknown place (24), far within the 48 erasures they correct once told where (P(more than 48 lost) ~ 1e-9).
# Streamed: each step a ~93-byte block, 30 % lost, ~28 bytes: beyond 24 errors, within 48 erasures (P ~ 3e-6).
@pytest.mark.parametrize(("stream", "rate"), [(False, 0.1), (True, 0.3)])
def test_lost_bytes_the_link_reports_are_repaired_as_erasures_p_per_block(
    edge_address: str, stream: bool, rate: float
) -> None:
    with device_client(
        RB8,
        edge_address,
        codec="entropy",
        entropy_chunks=4,
        fec_parity_bytes=48,
        channel=f"erasure:{rate}",
        stream=stream,
    ) as client:
        damages = [answer["link_damage"] for answer in answers_with_the_monolithic_logits(client)]
    assert all(d["erased_chunks"] == d["fec_failed_blocks"] == 0 for d in damages)
    assert sum(d["fec_corrected_bytes"] for d in damages) > 8 * 20


def test_a_frame_with_one_damaged_chunk_runs_with_that_chunk_silent(edge_address: str) -> None:
    head = HeadRunner.load(RB8, "entropy", entropy_chunks=4)  # C' = 8: two channels per chunk
    output = head.run(synthetic_png(3))
    frame = output.frame
    damaged = bytearray(frame.payload)
    damaged[-1] ^= 0x01  # the last chunk's coder words
    with grpc.insecure_channel(edge_address) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)
        reply = stub.Infer(altered(frame, payload=bytes(damaged)), timeout=30)
        assert (reply.damage.chunks, reply.damage.erased_chunks) == (4, 1)
        # the same logits as the tail run here on the head's spikes with the last chunk's channels, 6 and 7, silenced
        silenced = torch.from_numpy(output.spikes.copy())
        silenced[:, :, 6:8] = 0
        tail = load_checkpoint(RB8, "tail").model
        with torch.inference_mode():
            expected = tail(silenced)
        torch.testing.assert_close(torch.tensor(list(reply.values)).reshape(1, -1), expected, rtol=0, atol=1e-5)
        # every chunk damaged, its table intact (the chunk count, the three lengths and the table's CRC-16, bytes
        # 0..8, untouched): nothing to run, refused
        for i in range(9, len(damaged)):
            damaged[i] ^= 0x10
        with pytest.raises(grpc.RpcError) as refused:
            stub.Infer(altered(frame, payload=bytes(damaged)), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "all 4 of its chunks fail the check" in refused.value.details()


def test_a_stream_runs_an_erased_chunk_silent_until_the_device_codes_it_fresh(edge_address: str) -> None:
    # RB8 in 4 chunks of 2 channels. Step 1's last chunk (channels 6, 7) is damaged; the device learns of it after
    # making step 2 (as when it runs a step ahead), so step 2's chunk is coded against a step the edge lacks and is
    # erased undecoded; step 3 codes it fresh, and the edge decodes it again.
    head = HeadRunner.load(RB8, "entropy", entropy_chunks=4)
    stream = head.open_stream(synthetic_png(0))
    steps = [stream.step(), stream.step(), stream.step(), stream.step(frozenset({3}))]
    # steps 1-3 entropy-coded (step 0, with no step before to take contexts from, goes raw: fewer bytes)
    assert [step.codec for step in steps[1:]] == [pb.CODEC_ENTROPY] * 3  # else the test would not test the rule
    assert list(steps[3].fresh_chunks) == [3]
    damaged = pb.SpikeStep()
    damaged.CopyFrom(steps[1])
    damaged.payload = steps[1].payload[:-1] + bytes([steps[1].payload[-1] ^ 0x01])  # chunk 3's last coded byte
    with grpc.insecure_channel(edge_address) as channel:
        replies = list(
            pb_grpc.SplitInferenceStub(channel).InferStream(iter([steps[0], damaged, *steps[2:]]), timeout=30)
        )
    assert [list(reply.damage.erased_chunk_indices) for reply in replies] == [[], [3], [3], []]
    # the logits after step 3: the whole tail run here on the head's spikes with channels 6 and 7 silent at steps 1, 2
    spikes = torch.from_numpy(np.concatenate(stream.spikes).copy())  # [T, 1, C', H', W']
    spikes[1:3, :, 6:8] = False
    tail = load_checkpoint(RB8, "tail").model  # loaded outside inference mode, as its tdBN's weights must be
    with torch.inference_mode():
        expected = tail(spikes)
    torch.testing.assert_close(torch.tensor(list(replies[3].values)).reshape(1, -1), expected, rtol=0, atol=1e-5)
