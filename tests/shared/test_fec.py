"""Reed–Solomon FEC: its overhead by formula, t = p/2 byte errors or p known erasures per block corrected, beyond
that the bytes as sent."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.codec import Codec, encode
from spikebottlenet.shared.fec import FecError, protect, protected_length, recover

RB8 = default_checkpoint("spiking_resnet50", 8)


@pytest.mark.parametrize("parity", [8, 16, 64])
@pytest.mark.parametrize("n", [1, 100, 191, 192, 239, 240, 1000])
def test_the_overhead_is_p_bytes_per_started_block_of_255_minus_p(parity: int, n: int) -> None:
    expected = n + parity * math.ceil(n / (255 - parity))  # written out: whole blocks, then a shorter last one
    assert len(protect(bytes(n), parity)) == protected_length(n, parity) == expected


def test_the_code_is_systematic_the_payload_travels_unchanged() -> None:
    payload = np.random.default_rng(0).bytes(600)
    sent = protect(payload, 16)
    assert sent[:239] == payload[:239] and sent[255 : 255 + 239] == payload[239:478]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 700), parity=st.sampled_from([8, 16, 32, 64]), seed=st.integers(0, 2**32 - 1))
def test_up_to_p_over_2_damaged_bytes_in_every_block_are_put_right(n: int, parity: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    payload = rng.bytes(n)
    sent = bytearray(protect(payload, parity))
    damaged = 0
    for start in range(0, len(sent), 255):
        block = min(255, len(sent) - start)
        for position in rng.choice(block, size=min(parity // 2, block), replace=False):
            sent[start + position] ^= int(rng.integers(1, 256))  # a byte changed: nonzero error value
            damaged += 1
    recovered = recover(bytes(sent), parity)
    assert recovered.payload == payload
    assert (recovered.corrected_bytes, recovered.failed_blocks) == (damaged, 0)


def test_a_block_beyond_repair_arrives_as_sent_and_the_others_are_repaired() -> None:
    payload = np.random.default_rng(1).bytes(3 * 239)  # three full blocks at p = 16
    sent = bytearray(protect(payload, 16))
    for position in range(255, 255 + 40):  # block 2: 40 damaged bytes, five times what 16 parity bytes correct
        sent[position] ^= 0xFF
    sent[3] ^= 0x01  # block 1: one
    recovered = recover(bytes(sent), 16)
    assert recovered.failed_blocks == 1 and recovered.corrected_bytes == 1
    assert recovered.payload[:239] == payload[:239] and recovered.payload[478:] == payload[478:]
    assert recovered.payload[239:478] == bytes(sent[255 : 255 + 239])  # the damaged message bytes, parity dropped


@pytest.mark.parametrize("parity", [-2, 2, 4, 9, 66])
def test_parity_is_even_and_bounded(parity: int) -> None:
    with pytest.raises(FecError, match="even"):
        protect(b"x", parity)


@pytest.mark.parametrize("length", [0, 255 + 16, 255 + 5])
def test_a_length_no_protected_payload_has_is_refused(length: int) -> None:
    with pytest.raises(FecError, match="no payload"):
        recover(bytes(length), 16)


def test_no_parity_is_the_identity() -> None:
    assert protect(b"abc", 0) == b"abc" and recover(b"abc", 0).payload == b"abc"


@pytest.fixture(scope="module")
def spike_payloads() -> list[bytes]:
    """The project's own payloads: the RB8 demo's spikes for eight images, entropy-coded in 4 chunks, each image's
    frame and all eight as one batch (over 255 bytes: several blocks)."""
    head = HeadRunner.load(RB8, "entropy", entropy_chunks=4)
    outputs = [head.run(synthetic_png(seed)) for seed in range(8)]
    batch = np.concatenate([output.spikes for output in outputs], axis=1)  # [T, 8, C', H', W']
    return [output.frame.payload for output in outputs] + [
        encode(batch, Codec.ENTROPY, assume_binary=True, model=head.spike_model, chunks=4)[1]
    ]


def erase(sent: bytes, per_block: int, rng: np.random.Generator) -> tuple[bytes, list[int]]:
    """``sent`` with ``per_block`` bytes of every 255-byte block (fewer in a short last one) lost: zeroed, as a
    byte-erasure link delivers them, and their positions."""
    damaged, lost = bytearray(sent), []
    for start in range(0, len(sent), 255):
        block = min(255, len(sent) - start)
        for position in rng.choice(block, size=min(per_block, block), replace=False):
            damaged[start + position] = 0
            lost.append(start + int(position))
    return bytes(damaged), sorted(lost)


@pytest.mark.parametrize("parity", [8, 16])
def test_p_erasures_per_block_are_recovered_where_p_over_2_errors_are_the_limit(
    spike_payloads: list[bytes], parity: int
) -> None:
    rng = np.random.default_rng(parity)
    for payload in spike_payloads:
        damaged, lost = erase(protect(payload, parity), parity, rng)
        assert recover(damaged, parity, lost).payload == payload  # told where: all p of every block
        # not told, the same damage is p errors of unknown place, twice what the code corrects: whatever the decoder
        # makes of a block then, the payload does not come back
        assert recover(damaged, parity).payload != payload or damaged == protect(payload, parity)


def test_erasures_and_errors_together_within_e_plus_2e_le_p(spike_payloads: list[bytes]) -> None:
    rng, payload = np.random.default_rng(3), spike_payloads[-1]
    damaged, lost = erase(protect(payload, 16), 10, rng)
    flipped = bytearray(damaged)
    for start in range(0, len(flipped), 255):  # 3 errors of unknown place per block besides: 10 + 2 * 3 = 16
        spots = [p for p in range(start, min(start + 255, len(flipped))) if p not in lost][:3]
        for spot in spots:
            flipped[spot] ^= 0x5A
    assert recover(bytes(flipped), 16, lost).payload == payload


def test_more_erasures_than_p_are_detected_and_the_block_arrives_as_it_came(spike_payloads: list[bytes]) -> None:
    rng = np.random.default_rng(4)
    for payload in spike_payloads:
        sent = protect(payload, 8)
        damaged, lost = erase(sent, 9, rng)
        recovered = recover(damaged, 8, lost)
        blocks = math.ceil(len(sent) / 255)
        assert recovered.failed_blocks == blocks and recovered.corrected_bytes == 0  # never decoded, never guessed
        assert recovered.payload == b"".join(damaged[s : s + 255][:-8] for s in range(0, len(damaged), 255))


def test_a_lost_position_outside_the_payload_is_refused() -> None:
    with pytest.raises(FecError, match="lost byte positions"):
        recover(protect(b"abc", 8), 8, [11])
