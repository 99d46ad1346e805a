"""Spike codec: exact round trips, the documented bit order, and refusal of bad payloads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spikebottlenet.shared.codec import Codec, SpikeCodecError, encode, raw_length
from spikebottlenet.shared.spike_tensors import decode

PAPER_FRAME = (4, 1, 16, 32, 32)  # RB1: T, B, C', H', W', the largest frame of the paper preset


def random_spikes(shape: tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape) < density).float()


shapes = st.lists(st.integers(1, 7), min_size=1, max_size=5).map(tuple)


@given(
    shape=shapes,
    density=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
    codec=st.sampled_from(["raw", "sparse", "auto"]),
)
def test_round_trip_is_exact(shape: tuple[int, ...], density: float, seed: int, codec: str) -> None:
    spikes = random_spikes(shape, density, seed)
    used, payload = encode(spikes, codec)
    if codec != "auto":
        assert used == codec
    decoded = decode(payload, shape, used)
    assert decoded.dtype == torch.float32 and torch.equal(decoded, spikes)


@given(shape=shapes, density=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_raw_is_numpy_packbits_and_auto_keeps_the_smaller(shape: tuple[int, ...], density: float, seed: int) -> None:
    spikes = random_spikes(shape, density, seed)
    _, raw = encode(spikes, "raw")
    _, sparse = encode(spikes, "sparse")
    assert raw == np.packbits(spikes.numpy().astype(np.uint8)).tobytes()
    assert len(raw) == raw_length(shape)
    assert len(encode(spikes, "auto")[1]) == min(len(raw), len(sparse))


@given(
    shape=shapes,
    density=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
    codec=st.sampled_from(["raw", "sparse", "auto"]),
    dtype=st.sampled_from([torch.float32, torch.bool, torch.uint8, torch.float16, torch.bfloat16]),
)
def test_assume_binary_encodes_binary_tensors_as_the_checked_path_does(
    shape: tuple[int, ...], density: float, seed: int, codec: str, dtype: torch.dtype
) -> None:
    spikes = random_spikes(shape, density, seed).to(dtype)
    assert encode(spikes, codec, assume_binary=True) == encode(spikes, codec)


@given(shape=shapes, data=st.data())
def test_raw_decoding_is_numpy_unpackbits(shape: tuple[int, ...], data: st.DataObject) -> None:
    # any payload of the right length is some binary tensor; numpy is the independent reference
    payload = data.draw(st.binary(min_size=raw_length(shape), max_size=raw_length(shape)))
    expected = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=math.prod(shape)).reshape(shape)
    for dtype in (torch.float32, torch.uint8, torch.bool):
        decoded = decode(payload, shape, "raw", dtype)
        assert decoded.dtype == dtype and decoded.shape == shape
        assert np.array_equal(decoded.numpy(), expected.astype(decoded.numpy().dtype))


def test_bit_order_first_spike_is_the_msb_of_the_first_byte() -> None:
    # C order over the shape: row 0 is bits 0..4, row 1 is bits 5..9
    spikes = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.float32)
    # bits 1000 0001 | 11(00 0000 padding)
    assert encode(spikes, "raw") == (Codec.RAW, bytes([0b1000_0001, 0b1100_0000]))
    assert torch.equal(decode(bytes([0b1000_0001, 0b1100_0000]), (2, 5), "raw"), spikes)
    assert torch.equal(decode(encode(spikes, "sparse")[1], (2, 5), "sparse"), spikes)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float16, torch.bfloat16])
def test_any_binary_dtype_encodes(dtype: torch.dtype) -> None:
    spikes = torch.tensor([1, 0, 1, 1], dtype=dtype)
    assert encode(spikes, "raw")[1] == bytes([0b1011_0000])
    assert torch.equal(decode(encode(spikes, "sparse")[1], (4,), "sparse"), spikes.float())


def test_strided_and_grad_tracking_tensors_encode() -> None:
    spikes = random_spikes((4, 3, 2, 5, 5), 0.3, seed=0).requires_grad_()
    one_image = spikes[:, 1]  # a strided view, as the device's spike raster takes one image of a batch
    expected = np.packbits(one_image.detach().numpy().astype(np.uint8)).tobytes()
    assert encode(one_image, "raw") == encode(one_image, "raw", assume_binary=True) == (Codec.RAW, expected)


def test_numpy_arrays_encode_like_tensors() -> None:
    assert encode(np.array([True, False, True, True]), "raw")[1] == bytes([0b1011_0000])


def test_sparse_is_much_smaller_than_raw_at_low_firing_rates() -> None:
    spikes = random_spikes(PAPER_FRAME, 0.02, seed=0)
    raw, sparse = encode(spikes, "raw")[1], encode(spikes, "sparse")[1]
    assert len(raw) == 8192
    assert len(sparse) < len(raw) / 3
    assert encode(spikes, "auto")[0] is Codec.SPARSE
    assert encode(random_spikes(PAPER_FRAME, 0.5, seed=0), "auto")[0] is Codec.RAW


@pytest.mark.parametrize("value", [0.5, -1.0, 2.0, 256.0, float("nan")])
def test_non_binary_tensors_are_refused(value: float) -> None:
    spikes = torch.zeros(3, 4)
    spikes[1, 2] = value
    with pytest.raises(SpikeCodecError, match="not binary"):
        encode(spikes, "raw")


def test_assume_binary_skips_the_check_and_sends_any_nonzero_value_as_a_spike() -> None:
    spikes = torch.tensor([0.0, 0.5, 1.0, -2.0, 0.0, 0.0, 0.0, 0.0])
    assert encode(spikes, "raw", assume_binary=True) == (Codec.RAW, bytes([0b0111_0000]))


def test_unknown_codecs_and_bad_shapes_are_refused() -> None:
    with pytest.raises(SpikeCodecError, match="unknown codec"):
        encode(torch.zeros(8), "zip")
    with pytest.raises(SpikeCodecError, match="unknown codec"):
        decode(b"\x00", (8,), "zip")
    with pytest.raises(SpikeCodecError, match="non-positive"):
        decode(b"", (0, 8), "raw")


@pytest.mark.parametrize("length", [0, 8191, 8193, 16384])
def test_raw_payloads_of_the_wrong_length_are_refused(length: int) -> None:
    with pytest.raises(SpikeCodecError, match="needs exactly 8192"):
        decode(bytes(length), PAPER_FRAME, "raw")


def test_every_truncation_and_any_trailing_bytes_of_a_sparse_payload_are_refused() -> None:
    spikes = random_spikes(PAPER_FRAME, 0.02, seed=1)
    payload = encode(spikes, "sparse")[1]
    for cut in range(len(payload)):
        with pytest.raises(SpikeCodecError):
            decode(payload[:cut], PAPER_FRAME, "sparse")
    with pytest.raises(SpikeCodecError, match="left over"):
        decode(payload + b"\x00", PAPER_FRAME, "sparse")


@pytest.mark.parametrize(
    "header",
    [
        bytes([0x18]) + b"\xff" * 8,  # 2**64 - 1 bits: decoding this blindly would ask for 2 EiB
        bytes([0x14]) + (2**31).to_bytes(4, "little"),
        bytes([0x13]) + (65537).to_bytes(3, "little"),  # one bit more than the frame holds
    ],
)
def test_a_sparse_header_declaring_another_length_is_refused_before_decoding(header: bytes) -> None:
    with pytest.raises(SpikeCodecError, match="declares"):
        decode(header + b"\x00" * 16, PAPER_FRAME, "sparse")


@pytest.mark.parametrize("first_byte", [0x20, 0x40, 0x80, 0x19, 0x1F])
def test_a_corrupt_sparse_header_byte_is_refused(first_byte: int) -> None:
    payload = encode(random_spikes(PAPER_FRAME, 0.02, seed=2), "sparse")[1]
    with pytest.raises(SpikeCodecError, match="corrupt"):
        decode(bytes([first_byte]) + payload[1:], PAPER_FRAME, "sparse")


@given(payload=st.binary(max_size=64), codec=st.sampled_from(["raw", "sparse"]))
def test_arbitrary_bytes_decode_to_a_binary_tensor_or_raise_spike_codec_error(payload: bytes, codec: str) -> None:
    shape = (2, 3, 5)
    try:
        decoded = decode(payload, shape, codec)
    except SpikeCodecError:
        return
    assert decoded.shape == shape and ((decoded == 0) | (decoded == 1)).all()
