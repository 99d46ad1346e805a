"""Reed–Solomon FEC: its overhead by formula, t = p/2 byte errors per block corrected, beyond that the bytes as sent."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikebottlenet.shared.fec import FecError, protect, protected_length, recover


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
