"""The entropy codec: exact round trips, sizes near a source's closed-form entropy, hostile payloads refused."""

from __future__ import annotations

import binascii
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikebottlenet.shared.codec import Codec, SpikeCodecError, encode, raw_length
from spikebottlenet.shared.entropy_codec import (
    CONTEXTS,
    EntropyCodecError,
    PreviousStep,
    SpikeContextModel,
    chunk_layout,
    conditional_entropy_bits,
    own_step_counts,
    transition_counts,
)
from spikebottlenet.shared.spike_tensors import decode

START, STAY, WAKE = 0.3, 0.7, 0.1  # P(fire) at t = 0, after firing, after silence


def markov_spikes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """[T, B, C, H, W] uint8 spikes of independent neurons, each a two-state Markov chain over time."""
    spikes = np.zeros(shape, dtype=np.uint8)
    spikes[0] = rng.random(shape[1:]) < START
    for t in range(1, shape[0]):
        spikes[t] = rng.random(shape[1:]) < np.where(spikes[t - 1] == 1, STAY, WAKE)
    return spikes


def binary_entropy(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def markov_entropy_bits(shape: tuple[int, ...]) -> float:
    """The source's entropy in closed form: per neuron h(START) + sum over t >= 1 of
    P(fired at t-1) h(STAY) + P(silent at t-1) h(WAKE), with P(fired) following the chain."""
    time_steps, neurons = shape[0], math.prod(shape[1:])
    fired, bits = START, binary_entropy(START)
    for _ in range(1, time_steps):
        bits += fired * binary_entropy(STAY) + (1 - fired) * binary_entropy(WAKE)
        fired = fired * STAY + (1 - fired) * WAKE
    return neurons * bits


FRAME = (4, 1, 8, 8, 8)  # 2,048 bits: 256 raw bytes


@pytest.fixture(scope="module")
def model() -> SpikeContextModel:
    return SpikeContextModel.fit(transition_counts(markov_spikes(np.random.default_rng(1), (4, 400, 8, 8, 8))))


def test_payloads_come_within_5_percent_of_the_sources_entropy(model: SpikeContextModel) -> None:
    rng = np.random.default_rng(2)
    sizes = [len(encode(markov_spikes(rng, FRAME), Codec.ENTROPY, model=model)[1]) for _ in range(200)]
    entropy_bytes = markov_entropy_bits(FRAME) / 8  # 183.5 bytes
    assert entropy_bytes * 0.97 < np.mean(sizes) <= entropy_bytes * 1.05
    assert np.mean(sizes) < 0.75 * raw_length(FRAME)


def test_the_first_order_bound_from_counts_matches_the_closed_form() -> None:
    spikes = markov_spikes(np.random.default_rng(3), (4, 2000, 2, 4, 4))
    per_frame = conditional_entropy_bits(own_step_counts(spikes)) / 2000
    assert per_frame == pytest.approx(markov_entropy_bits((4, 1, 2, 4, 4)), rel=0.01)


def legal_chunk_counts(channels: int, height: int) -> list[int]:
    """As the format documents it: 1..C', or a multiple of C' that cuts every channel into bands of >= 1 row."""
    return [*range(1, channels + 1), *(channels * k for k in range(2, height + 1) if channels * k <= 255)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    t=st.integers(1, 6),
    b=st.integers(1, 3),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    pick=st.integers(0, 1000),
)
def test_any_frame_round_trips_exactly_in_any_number_of_chunks(
    model: SpikeContextModel, t: int, b: int, h: int, w: int, density: float, seed: int, pick: int
) -> None:
    counts = legal_chunk_counts(8, h)
    chunks = counts[pick % len(counts)]
    spikes = (np.random.default_rng(seed).random((t, b, 8, h, w)) < density).astype(np.float32)
    codec, payload = encode(torch.from_numpy(spikes), Codec.ENTROPY, model=model, chunks=chunks)
    # asked for entropy, a frame never goes longer than raw: a small or unlikely one is sent raw instead
    assert len(payload) <= raw_length(spikes.shape)
    assert codec is Codec.ENTROPY or len(model.encode(spikes.astype(np.uint8), chunks)) > raw_length(spikes.shape)
    assert torch.equal(decode(payload, spikes.shape, codec, model=model), torch.from_numpy(spikes))


@pytest.mark.parametrize(("channels", "height"), [(4, 8), (1, 32), (3, 5), (8, 1)])
def test_chunks_cover_every_channel_and_row_once_as_array_split_cuts_them(channels: int, height: int) -> None:
    for chunks in legal_chunk_counts(channels, height):
        owner = np.full((channels, height), -1)
        for index, chunk in enumerate(chunk_layout(channels, height, chunks)):
            assert (owner[chunk.channels, chunk.rows] == -1).all()
            owner[chunk.channels, chunk.rows] = index
        assert (owner >= 0).all()
        if chunks <= channels:  # whole channels, in runs numpy.array_split would make
            expected = np.array_split(np.arange(channels), chunks)
            assert [list(np.unique(np.nonzero(owner == i)[0])) for i in range(chunks)] == [list(e) for e in expected]
    for bad in (0, channels * height + 1, *([channels + 1] if channels > 1 and height > 1 else [])):
        with pytest.raises(EntropyCodecError, match="chunks"):
            chunk_layout(channels, height, bad)


def test_auto_keeps_the_smallest_and_a_tiny_frame_is_never_larger_than_raw(model: SpikeContextModel) -> None:
    rng = np.random.default_rng(4)
    big = markov_spikes(rng, FRAME)
    assert encode(big, "auto", model=model)[0] is Codec.ENTROPY
    tiny = markov_spikes(rng, (4, 1, 8, 1, 1))  # 32 bits: 4 raw bytes, less than the entropy payload's CRC
    codec, payload = encode(tiny, "auto", model=model)
    assert codec is Codec.RAW and len(payload) == 4
    assert encode(big, "auto")[0] is not Codec.ENTROPY  # without a model, auto does not consider it


def test_a_batch_is_one_stream_of_its_frames_bits(model: SpikeContextModel) -> None:
    batch = markov_spikes(np.random.default_rng(5), (4, 3, 8, 8, 8))
    payload = encode(batch, Codec.ENTROPY, model=model)[1]
    singles = sum(len(encode(batch[:, i : i + 1], Codec.ENTROPY, model=model)[1]) for i in range(3))
    assert len(payload) < singles  # one CRC and one coder flush for the three
    assert torch.equal(decode(payload, batch.shape, Codec.ENTROPY, model=model), torch.from_numpy(batch).float())


def hostile(model: SpikeContextModel) -> dict[str, bytes]:
    good = encode(markov_spikes(np.random.default_rng(6), FRAME), Codec.ENTROPY, model=model)[1]
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x04
    return {
        "empty": b"",
        "shorter than its CRC": b"\x01\x02",
        "truncated": good[:-4],
        "one bit flipped": bytes(flipped),
        "not whole words": good + b"\x00",
        "random bytes": np.random.default_rng(7).bytes(len(good)),
        "far too long": good + bytes(4 * 4096),
    }


@pytest.mark.parametrize(
    "name",
    [
        "empty",
        "shorter than its CRC",
        "truncated",
        "one bit flipped",
        "not whole words",
        "random bytes",
        "far too long",
    ],
)
def test_a_hostile_payload_is_the_codecs_error_at_once(model: SpikeContextModel, name: str) -> None:
    payload = hostile(model)[name]
    start = time.perf_counter()
    with pytest.raises(SpikeCodecError, match="entropy payload"):
        decode(payload, FRAME, Codec.ENTROPY, model=model)
    assert time.perf_counter() - start < 1.0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=600))
def test_arbitrary_bytes_never_decode_to_spikes_silently(model: SpikeContextModel, payload: bytes) -> None:
    with pytest.raises(SpikeCodecError):
        decode(payload, FRAME, Codec.ENTROPY, model=model)


def test_no_model_no_entropy_codec() -> None:
    spikes = np.zeros(FRAME, dtype=np.uint8)
    with pytest.raises(SpikeCodecError, match="fit-codec"):
        encode(spikes, Codec.ENTROPY)
    with pytest.raises(SpikeCodecError, match="this checkpoint has none"):
        decode(b"\x00" * 8, FRAME, Codec.ENTROPY)


def test_the_table_round_trips_through_the_config_and_is_checked(model: SpikeContextModel) -> None:
    again = SpikeContextModel.from_config(model.to_config())
    assert again.p_fire.shape == (8, CONTEXTS) and np.allclose(again.p_fire, model.p_fire, atol=1e-6)
    with pytest.raises(ValueError):
        SpikeContextModel.from_config([[0.5] * (CONTEXTS - 1)])
    with pytest.raises(ValueError):
        SpikeContextModel.from_config([[0.0] * CONTEXTS])


# Damage to a multi-chunk frame: whatever it hits, a chunk is delivered only as it was sent. The frames are cut
# every way the format allows (runs of channels, and bands of rows, where chunks of one channel share its
# probabilities and could pass for each other), at C' = 1 as well.
CUTS = [
    (shape, chunks)
    for shape in ((4, 1, 1, 8, 8), (4, 1, 2, 8, 8), (2, 2, 4, 6, 6))
    for chunks in legal_chunk_counts(shape[2], shape[3])
    if chunks > 1
]


def damage(payload: bytes, kind: str, data: st.DataObject) -> bytes:
    """``payload`` with one kind of damage, its place and size drawn by hypothesis."""
    damaged = bytearray(payload)
    table_end = 1 + 2 * (payload[0] - 1)
    if kind == "bits":  # independent flips anywhere: the chunk table, checks, words
        for _ in range(data.draw(st.integers(1, 6))):
            position = data.draw(st.integers(0, 8 * len(payload) - 1))
            damaged[position // 8] ^= 1 << (position % 8)
    elif kind == "zeroed":  # a run of bytes a lower layer zeroed
        start = data.draw(st.integers(0, len(payload) - 1))
        length = data.draw(st.integers(1, 12))
        damaged[start : start + length] = bytes(len(damaged[start : start + length]))
    elif kind == "length":  # one chunk-length field changed: the boundaries shift
        field = data.draw(st.integers(0, max(0, (table_end - 1) // 2 - 1)))
        shift = data.draw(st.integers(-3, 3).filter(bool))
        value = int.from_bytes(payload[1 + 2 * field : 3 + 2 * field], "little") + shift
        damaged[1 + 2 * field : 3 + 2 * field] = (value % 0x10000).to_bytes(2, "little")
    elif kind == "count":  # the chunk count itself
        damaged[0] = data.draw(st.integers(0, 255).filter(lambda n: n != payload[0]))
    elif kind == "truncated":
        del damaged[data.draw(st.integers(1, len(payload) - 1)) :]
    elif kind == "appended":
        damaged += data.draw(st.binary(min_size=1, max_size=8))
    return bytes(damaged)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.sampled_from(CUTS),
    kind=st.sampled_from(["bits", "zeroed", "length", "count", "truncated", "appended"]),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_damage_to_a_chunked_frame_never_delivers_a_chunk_other_than_sent(
    cut: tuple[tuple[int, ...], int], kind: str, seed: int, data: st.DataObject
) -> None:
    shape, chunks = cut
    model = SpikeContextModel(np.full((shape[2], CONTEXTS), 0.3))
    sent = markov_spikes(np.random.default_rng(seed), shape)
    if kind == "length" and chunks == 1:
        return
    damaged = damage(model.encode(sent, chunks), kind, data)
    try:
        decoded = model.decode(damaged, shape)
    except EntropyCodecError:
        return  # erased whole: the table did not parse or failed its check
    for index, chunk in enumerate(decoded.chunks):
        if index not in decoded.erased:
            assert np.array_equal(chunk.of(decoded.bits), chunk.of(sent)), (kind, index)
        else:
            assert not chunk.of(decoded.bits).any()  # an erased chunk comes back silent


def test_a_chunk_carrying_another_bands_bytes_is_erased() -> None:
    """Two row bands of one channel share its probabilities, so each one's words decode cleanly in the other's
    place: with the chunks' bodies swapped (and the table fixed up to match), both are refused by their checks."""
    shape, model = (4, 1, 1, 8, 8), SpikeContextModel(np.full((1, CONTEXTS), 0.3))
    sent = markov_spikes(np.random.default_rng(9), shape)
    payload = model.encode(sent, 2)
    table_end = 3 + 2  # count, one length, the table's CRC-16
    first_words = 4 * int.from_bytes(payload[1:3], "little")
    first_end = table_end + (2 if first_words < 64 else 4) + first_words
    first, second = payload[table_end:first_end], payload[first_end:]
    table = bytes([2]) + ((len(second) - 2) // 4).to_bytes(2, "little")
    swapped_table = table + binascii.crc_hqx(table + len(payload).to_bytes(4, "little"), 0xFFFF).to_bytes(2, "little")
    decoded = model.decode(swapped_table + second + first, shape)
    assert decoded.erased == (0, 1)


def test_a_stream_recovers_a_chunk_erased_at_one_step_once_that_chunk_is_coded_fresh() -> None:
    """The rule in PreviousStep: a chunk erased at step 1 leaves the receiver without its contexts for step 2, which
    is erased undecoded (nothing guessed); step 3, coded fresh, decodes intact, as do the other chunk's steps."""
    shape = (1, 1, 2, 8, 8)
    model = SpikeContextModel.fit(transition_counts(markov_spikes(np.random.default_rng(13), (4, 400, 2, 8, 8))))
    sent = markov_spikes(np.random.default_rng(11), (4, *shape[1:]))
    fresh_at = {3: frozenset({1})}  # the sender learnt of the erasure only after making step 2
    held, unknown, delivered = None, frozenset[int](), []
    for t in range(4):
        previous_sent = None if t == 0 else PreviousStep(sent[t - 1 : t], fresh_at.get(t, frozenset()))
        payload = bytearray(model.encode(sent[t : t + 1], 2, previous_sent))
        if t == 1:
            payload[-1] ^= 0x01  # chunk 1's last coded byte
        previous_held = None if held is None else PreviousStep(held, fresh_at.get(t, frozenset()), unknown)
        decoded = model.decode(bytes(payload), shape, previous_held)
        delivered.append(decoded.erased)
        held, unknown = decoded.bits, frozenset(decoded.erased)
        for index, chunk in enumerate(decoded.chunks):
            if index not in decoded.erased:
                assert np.array_equal(chunk.of(decoded.bits), chunk.of(sent[t : t + 1]))
    assert delivered == [(), (1,), (1,), ()]


def test_a_step_decoded_against_a_step_the_receiver_lacks_fails_its_check() -> None:
    """Without the rule, the receiver would decode step 2's chunk from the silence it holds for it: the check covers
    the decoded spikes, so that chunk is erased rather than made up."""
    shape = (1, 1, 1, 8, 8)
    # a model whose probabilities depend on the step before (as fitted on a Markov source): the contexts matter
    model = SpikeContextModel.fit(transition_counts(markov_spikes(np.random.default_rng(13), (4, 400, 1, 8, 8))))
    sent = markov_spikes(np.random.default_rng(12), (2, *shape[1:]))
    assert sent[0].any()
    payload = model.encode(sent[1:2], 1, PreviousStep(sent[0:1]))
    assert model.decode(payload, shape, PreviousStep(sent[0:1])).erased == ()
    assert model.decode(payload, shape, PreviousStep(np.zeros_like(sent[0:1]))).erased == (0,)
