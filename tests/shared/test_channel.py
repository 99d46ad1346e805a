"""Channel models against their parameters, and a damaged entropy payload decoded as an erasure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikebottlenet.shared.channel import BinarySymmetric, ByteErasure, GilbertElliott, parse_channel
from spikebottlenet.shared.codec import Codec, encode
from spikebottlenet.shared.entropy_codec import SpikeContextModel, transition_counts
from spikebottlenet.shared.spike_tensors import receive

PAYLOAD = bytes(20_000)  # 160,000 bits of zeros: every 1 afterwards is a flip


def flips(payload: bytes, damaged: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(payload, np.uint8) ^ np.frombuffer(damaged, np.uint8))


def within_binomial(count: int, n: int, p: float, sigmas: float = 5) -> bool:
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def test_binary_symmetric_flips_bits_at_its_rate() -> None:
    delivery = BinarySymmetric(1e-2).apply(PAYLOAD, np.random.default_rng(0))
    assert delivery.lost == ()  # a flipped bit goes unnoticed by the link
    errors = flips(PAYLOAD, delivery.payload)
    assert within_binomial(int(errors.sum()), errors.size, 1e-2)


def test_erasure_zeroes_bytes_at_its_rate() -> None:
    ones = bytes([0xFF]) * 20_000
    delivery = ByteErasure(0.05).apply(ones, np.random.default_rng(1))
    damaged = np.frombuffer(delivery.payload, np.uint8)
    assert set(np.unique(damaged)) <= {0, 0xFF}
    assert within_binomial(int((damaged == 0).sum()), damaged.size, 0.05)
    assert delivery.lost == tuple(np.flatnonzero(damaged == 0))  # the link reports exactly the bytes it lost


def test_gilbert_elliott_errors_come_in_bursts_at_the_long_run_rate() -> None:
    channel = GilbertElliott(p_good_to_bad=0.01, p_bad_to_good=0.2, ber_bad=0.3)
    long_run = 0.01 / 0.21 * 0.3  # (P_GB * BER_BAD) / (P_GB + P_BG), written out: 0.01429
    assert channel.ber == pytest.approx(long_run)
    errors = flips(PAYLOAD, channel.apply(PAYLOAD, np.random.default_rng(2)).payload)
    assert errors.mean() == pytest.approx(long_run, rel=0.15)
    after_error = errors[1:][errors[:-1] == 1].mean()  # P(error | the bit before was one)
    assert after_error > 5 * errors.mean()  # bursty: far likelier right after an error


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("bsc:1e-3", BinarySymmetric(1e-3)),
        ("erasure:0.5", ByteErasure(0.5)),
        ("gilbert:0.01,0.3,0.1", GilbertElliott(0.01, 0.3, 0.1)),
        ("gilbert:0.01,0.3,0.1,0.001", GilbertElliott(0.01, 0.3, 0.1, 0.001)),
    ],
)
def test_specs_parse(spec: str, expected: object) -> None:
    assert parse_channel(spec) == expected


@pytest.mark.parametrize("spec", ["bsc", "bsc:x", "bsc:2", "awgn:0.1", "gilbert:0.1,0.2", "erasure:0.1,0.2"])
def test_bad_specs_name_the_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="bsc:|probability|numbers"):
        parse_channel(spec)


def test_a_damaged_entropy_chunk_is_erased_not_garbage_and_the_others_arrive_intact() -> None:
    rng = np.random.default_rng(3)
    # C' = 4: four chunks of one channel each; neurons that keep firing, so that entropy coding beats raw
    spikes = np.repeat(rng.random((1, 1, 4, 8, 8)) < 0.3, 4, axis=0).astype(np.float32)
    model = SpikeContextModel.fit(transition_counts(spikes.astype(np.uint8)))
    for chunks in (1, 4):
        codec, payload = encode(spikes, Codec.ENTROPY, model=model, chunks=chunks)
        assert codec is Codec.ENTROPY
        received = receive(payload, spikes.shape, Codec.ENTROPY, model)
        assert (received.chunks, received.erased_chunks) == (chunks, 0)
        assert torch.equal(received.spikes, torch.from_numpy(spikes))
    damaged = bytearray(payload)  # four chunks; flip a bit in the last byte: the last chunk's coder words
    damaged[-1] ^= 0x01
    received = receive(bytes(damaged), spikes.shape, Codec.ENTROPY, model)
    assert (received.chunks, received.erased_chunks) == (4, 1)
    assert not received.spikes[:, :, 3].any()  # the erased channel: silent, nothing made up
    assert torch.equal(received.spikes[:, :, :3], torch.from_numpy(spikes[:, :, :3]))
    # one chunk for the whole frame: the same flip erases all of it
    _, single = encode(spikes, Codec.ENTROPY, model=model)
    damaged = bytearray(single)
    damaged[-1] ^= 0x01
    received = receive(bytes(damaged), spikes.shape, Codec.ENTROPY, model)
    assert received.erased_chunks == 1 and not received.spikes.any()
    # raw degrades bit by bit instead: one flipped bit is one wrong spike
    _, raw = encode(spikes, Codec.RAW)
    flipped = bytearray(raw)
    flipped[0] ^= 0x80
    received = receive(bytes(flipped), spikes.shape, Codec.RAW, None)
    assert received.erased_chunks == 0 and int((received.spikes != torch.from_numpy(spikes)).sum()) == 1


def test_a_payload_whose_layout_breaks_is_lost_whole() -> None:
    spikes = np.zeros((2, 1, 4, 4, 4), dtype=np.uint8)
    model = SpikeContextModel.fit(transition_counts(spikes))
    payload = bytearray(model.encode(spikes, 4))
    payload[0] = 200  # a chunk count no frame of 4 channels of 4 rows has
    received = receive(bytes(payload), spikes.shape, Codec.ENTROPY, model, chunks_sent=4)
    assert (received.chunks, received.erased_chunks) == (4, 4) and not received.spikes.any()
