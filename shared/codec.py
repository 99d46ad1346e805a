"""Spike codec: binary tensors <-> bytes on the wire.

Bit order, for every codec: the tensor is flattened in C order (row-major over its shape, e.g.
T, B, C', H', W'), and bit i of that sequence is bit (7 - i % 8) of byte i // 8, i.e. the first
spike is the most significant bit of the first byte (numpy.packbits' "big" order, bitarray's
"big" endianness). The last byte is zero-padded.

    raw     ceil(bits / 8) bytes, one bit per position (numpy.packbits: fastest in bench/codec_bench.py)
    sparse  bitarray.util.sc_encode of the same bit sequence: a self-describing sparse stream
            that goes below one bit per position when few neurons fire
    auto    encodes both and keeps the smaller for this frame (the frame says which was used)
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import torch
from bitarray import bitarray
from bitarray.util import sc_decode, sc_encode


class Codec(str, Enum):
    RAW = "raw"
    SPARSE = "sparse"


CODEC_CHOICES = ("raw", "sparse", "auto")


class SpikeCodecError(ValueError):
    """A payload or tensor that cannot be encoded or decoded as asked."""


def raw_length(shape: tuple[int, ...]) -> int:
    """Bytes of a raw payload for a tensor of this shape."""
    return math.ceil(math.prod(shape) / 8)


def _as_bits(spikes: torch.Tensor | np.ndarray) -> np.ndarray:
    """Flat uint8 0/1 array of a binary tensor; anything else is an error."""
    if isinstance(spikes, torch.Tensor):
        spikes = spikes.detach().cpu()
        # numpy has no bfloat16; widening to float32 is exact, so the binary check below still holds
        a = (spikes.float() if spikes.dtype == torch.bfloat16 else spikes).numpy()
    else:
        a = np.asarray(spikes)
    flat = a.reshape(-1)
    if flat.dtype == np.bool_:
        return flat.view(np.uint8)
    bits = flat.astype(np.uint8)
    # bits == flat compares in flat's dtype, so 0.5 -> 0 or 2 -> 2 are caught as non-binary
    if bits.size and (bits.max(initial=0) > 1 or not np.array_equal(bits, flat)):
        bad = flat[(flat != 0) & (flat != 1)][:3]
        raise SpikeCodecError(f"spike tensor is not binary: found values {bad.tolist()} (expected only 0 and 1)")
    return bits


def encode(spikes: torch.Tensor | np.ndarray, codec: str = "raw") -> tuple[Codec, bytes]:
    """Pack a binary tensor; returns the codec actually used and the payload."""
    bits = _as_bits(spikes)
    if codec == Codec.RAW:
        return Codec.RAW, np.packbits(bits).tobytes()
    if codec == Codec.SPARSE:
        return Codec.SPARSE, _sparse_encode(bits)
    if codec == "auto":
        raw = np.packbits(bits).tobytes()
        sparse = _sparse_encode(bits)
        return (Codec.SPARSE, sparse) if len(sparse) < len(raw) else (Codec.RAW, raw)
    raise SpikeCodecError(f"unknown codec {codec!r}; expected one of {', '.join(CODEC_CHOICES)}")


def _sparse_encode(bits: np.ndarray) -> bytes:
    # numpy packs in the raw codec's (big-endian) bit order; bitarray adopts those bytes as they are
    ba = bitarray(endian="big")
    ba.frombytes(np.packbits(bits).tobytes())
    del ba[bits.size:]  # drop the zero padding of the last byte
    return sc_encode(ba)


def decode(payload: bytes, shape: tuple[int, ...], codec: Codec | str,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unpack a payload into a binary tensor of ``shape``; raises SpikeCodecError if it does not fit."""
    n = math.prod(shape)
    if any(d <= 0 for d in shape):
        raise SpikeCodecError(f"shape {tuple(shape)} has a non-positive dimension")
    try:
        codec = Codec(codec)
    except ValueError:
        raise SpikeCodecError(f"unknown codec {codec!r}; expected 'raw' or 'sparse'") from None
    if codec is Codec.RAW:
        expected = raw_length(shape)
        if len(payload) != expected:
            raise SpikeCodecError(f"raw payload is {len(payload)} bytes; shape {tuple(shape)} "
                                  f"({n} bits) needs exactly {expected}")
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=n)
    else:
        bits = _sparse_decode(payload, n)
    return torch.from_numpy(bits.reshape(shape)).to(dtype)  # unpackbits' output is a fresh, writable array


def _sparse_decode(payload: bytes, n: int) -> np.ndarray:
    # Check the declared length before decoding: sc_decode allocates whatever the header claims,
    # so a hostile 10-byte frame could otherwise ask for terabytes. Header: byte 0 = endianness
    # flag (0x10) | number of length bytes (low nibble), then the bit count, little-endian.
    if not payload:
        raise SpikeCodecError("sparse payload is empty")
    head, width = payload[0], payload[0] & 0x0F
    if head & 0xE0 or width > 8 or len(payload) < 1 + width:
        raise SpikeCodecError(f"corrupt sparse payload: bad header byte 0x{head:02x}")
    declared = int.from_bytes(payload[1:1 + width], "little")
    if declared != n:
        raise SpikeCodecError(f"sparse payload declares {declared} bits; the shape needs {n}")
    stream = iter(payload)
    try:
        ba = sc_decode(stream)
    except (ValueError, TypeError, StopIteration) as e:
        raise SpikeCodecError(f"corrupt sparse payload: {e}") from None
    if next(stream, None) is not None:
        raise SpikeCodecError("corrupt sparse payload: bytes left over after the end of the stream")
    if ba.endian != "big":
        ba = bitarray(ba, endian="big")
    return np.unpackbits(np.frombuffer(ba.tobytes(), dtype=np.uint8), count=n)
