"""Channel models against their parameters, and a damaged entropy payload decoded as an erasure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.channel import BinarySymmetric, ByteErasure, GilbertElliott, decode_or_erase, parse_channel
from shared.codec import Codec, encode
from shared.entropy_codec import SpikeContextModel, transition_counts

PAYLOAD = bytes(20_000)  # 160,000 bits of zeros: every 1 afterwards is a flip


def flips(payload: bytes, damaged: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(payload, np.uint8) ^ np.frombuffer(damaged, np.uint8))


def within_binomial(count: int, n: int, p: float, sigmas: float = 5) -> bool:
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def test_binary_symmetric_flips_bits_at_its_rate() -> None:
    errors = flips(PAYLOAD, BinarySymmetric(1e-2).apply(PAYLOAD, np.random.default_rng(0)))
    assert within_binomial(int(errors.sum()), errors.size, 1e-2)


def test_erasure_zeroes_bytes_at_its_rate() -> None:
    ones = bytes([0xFF]) * 20_000
    damaged = np.frombuffer(ByteErasure(0.05).apply(ones, np.random.default_rng(1)), np.uint8)
    assert set(np.unique(damaged)) <= {0, 0xFF}
    assert within_binomial(int((damaged == 0).sum()), damaged.size, 0.05)


def test_gilbert_elliott_errors_come_in_bursts_at_the_long_run_rate() -> None:
    channel = GilbertElliott(p_good_to_bad=0.01, p_bad_to_good=0.2, ber_bad=0.3)
    long_run = 0.01 / 0.21 * 0.3  # (P_GB * BER_BAD) / (P_GB + P_BG), written out: 0.01429
    assert channel.ber == pytest.approx(long_run)
    errors = flips(PAYLOAD, channel.apply(PAYLOAD, np.random.default_rng(2)))
    assert errors.mean() == pytest.approx(long_run, rel=0.15)
    after_error = errors[1:][errors[:-1] == 1].mean()  # P(error | the bit before was one)
    assert after_error > 5 * errors.mean()  # bursty: far likelier right after an error


@pytest.mark.parametrize("spec, expected", [("bsc:1e-3", BinarySymmetric(1e-3)), ("erasure:0.5", ByteErasure(0.5)),
                                            ("gilbert:0.01,0.3,0.1", GilbertElliott(0.01, 0.3, 0.1)),
                                            ("gilbert:0.01,0.3,0.1,0.001", GilbertElliott(0.01, 0.3, 0.1, 0.001))])
def test_specs_parse(spec: str, expected: object) -> None:
    assert parse_channel(spec) == expected


@pytest.mark.parametrize("spec", ["bsc", "bsc:x", "bsc:2", "awgn:0.1", "gilbert:0.1,0.2", "erasure:0.1,0.2"])
def test_bad_specs_name_the_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="bsc:|probability|numbers"):
        parse_channel(spec)


def test_a_damaged_entropy_payload_is_erased_not_garbage() -> None:
    rng = np.random.default_rng(3)
    spikes = (rng.random((4, 1, 2, 8, 8)) < 0.3).astype(np.float32)
    model = SpikeContextModel.fit(transition_counts(spikes.astype(np.uint8)))
    _, payload = encode(spikes, Codec.ENTROPY, model=model)
    damaged = bytearray(payload)
    damaged[-3] ^= 0x01
    decoded, erased = decode_or_erase(bytes(damaged), spikes.shape, Codec.ENTROPY, model)
    assert erased and not decoded.any()  # all zeros: nothing made up
    decoded, erased = decode_or_erase(payload, spikes.shape, Codec.ENTROPY, model)
    assert not erased and torch.equal(decoded, torch.from_numpy(spikes))
    # raw degrades bit by bit instead: one flipped bit is one wrong spike
    _, raw = encode(spikes, Codec.RAW)
    flipped = bytearray(raw)
    flipped[0] ^= 0x80
    decoded, erased = decode_or_erase(bytes(flipped), spikes.shape, Codec.RAW, None)
    assert not erased and int((decoded != torch.from_numpy(spikes)).sum()) == 1
