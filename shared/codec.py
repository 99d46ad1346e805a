"""Spike codec: binary tensors <-> bytes on the wire.

Bit order, for every codec: the tensor is flattened in C order (row-major over its shape, e.g.
T, B, C', H', W'), and bit i of that sequence is bit (7 - i % 8) of byte i // 8, i.e. the first
spike is the most significant bit of the first byte (numpy.packbits' "big" order, bitarray's
"big" endianness). The last byte is zero-padded.

    raw     ceil(bits / 8) bytes, one bit per position (numpy.packbits: fastest in bench/codec_bench.py)
    sparse  bitarray.util.sc_encode of the same bit sequence: a self-describing sparse stream
            that goes below one bit per position when few neurons fire
    entropy range coding of the same bits under the model's context model (shared/entropy_codec.py:
            each bit's probability from its channel and the same neuron's previous time step), in one
            or more independently decodable chunks of channels, each with its own check (CRC-16 or CRC-32); needs a
            checkpoint whose config carries the fitted model. A frame it would code longer than raw
            is sent raw (the frame says so)
    auto    encodes every codec the model has and keeps the smallest for this frame (the frame says
            which was used)

This module imports no torch: a device that runs its head without torch (onnxruntime) encodes numpy arrays
with it. ``encode`` still takes torch tensors from a caller that has them; the receiving side's torch tensors
(``decode``, the GPU unpack) are shared/spike_tensors.py's, on top of ``read_payload`` and ``unpack`` here.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
from bitarray import bitarray
from bitarray.util import sc_decode, sc_encode

from .entropy_codec import ChunkTooLong, EntropyCodecError, PreviousStep, SpikeContextModel
from .errors import SpikeBottleNetError

if TYPE_CHECKING:
    import torch


class Codec(str, Enum):
    RAW = "raw"
    SPARSE = "sparse"
    ENTROPY = "entropy"


CODEC_CHOICES = ("raw", "sparse", "entropy", "auto")
_CODEC_OF = {codec.value: codec for codec in Codec}  # Codec(value) without the enum's slower call path


class SpikeCodecError(SpikeBottleNetError, ValueError):
    """A payload or tensor that cannot be encoded or decoded as asked."""


def raw_length(shape: tuple[int, ...]) -> int:
    """Bytes of a raw payload for a tensor of this shape."""
    return math.ceil(math.prod(shape) / 8)


def max_payload_length(shape: tuple[int, ...], codec: Codec) -> int:
    """The longest payload ``encode`` makes for a tensor of ``shape`` with ``codec``: raw exactly its bits; entropy
    never longer (``encode`` sends raw instead); sparse at most one block header per 4,096 bytes and a stream
    header beyond them (bitarray's sc format). A receiver refuses a longer one before doing any work on it."""
    raw = raw_length(shape)
    return raw + raw // 4096 + 16 if codec is Codec.SPARSE else raw


def _as_bits(spikes: torch.Tensor | np.ndarray, assume_binary: bool) -> np.ndarray:
    """Flat bool array of a binary tensor (nonzero = spike); unless ``assume_binary``, anything but
    0 and 1 is an error."""
    # A torch tensor exists only in a process that has loaded torch: look it up there rather than import it
    loaded_torch = sys.modules.get("torch")
    if loaded_torch is not None and isinstance(spikes, loaded_torch.Tensor):
        # numpy has no bfloat16; widening to float32 is exact, so the binary check below still holds.
        # force=True: detached and on the CPU first, a view where it can be
        a = (spikes.float() if spikes.dtype == loaded_torch.bfloat16 else spikes).numpy(force=True)
    else:
        a = np.asarray(spikes)
    flat = a.ravel()
    if flat.dtype == np.bool_:
        return flat
    bits = flat != 0  # one pass in flat's own dtype: no float -> integer conversion
    # every 1 is also nonzero, so as many ones as nonzeros means nothing else (0.5, 2, -1, NaN) is there
    if not assume_binary and np.count_nonzero(flat == 1) != np.count_nonzero(bits):
        bad = flat[bits & (flat != 1)][:3]
        raise SpikeCodecError(f"spike tensor is not binary: found values {bad.tolist()} (expected only 0 and 1)")
    return bits


def encode(
    spikes: torch.Tensor | np.ndarray,
    codec: str = "raw",
    *,
    assume_binary: bool = False,
    model: SpikeContextModel | None = None,
    chunks: int = 1,
    previous: PreviousStep | None = None,
) -> tuple[Codec, bytes]:
    """Pack a binary tensor; returns the codec actually used and the payload.

    The tensor is checked to hold only 0 and 1 unless the caller passes ``assume_binary=True``,
    which is for tensors binary by construction, such as a LIF's output; any other nonzero value
    would then be sent as a spike. ``model``: the checkpoint's entropy model, for ``entropy`` (the
    tensor then shaped T, B, C', H', W') and for ``auto`` to consider it; ``chunks``: how many independently
    decodable chunks an entropy payload is cut into (1: fewest bytes; more: a damaged byte erases less);
    ``previous``: for a stream's time step, the step before it, which the entropy coder takes its first contexts
    from (the receiver holds it too), and the chunks it codes fresh, without it.
    """
    bits = _as_bits(spikes, assume_binary)
    packed = np.packbits(bits)
    if codec == Codec.RAW:
        return Codec.RAW, packed.tobytes()
    if codec == Codec.SPARSE:
        return Codec.SPARSE, _sparse_encode(packed, bits.size)
    if codec == Codec.ENTROPY:
        # Spikes the model finds very unlikely (an input unlike any in training) can code longer than raw:
        # then raw goes, so a frame never exceeds its raw size (the edge's message limit counts on it).
        entropy, raw = _entropy_encode(bits, tuple(spikes.shape), model, chunks, previous), packed.tobytes()
        return (Codec.ENTROPY, entropy) if entropy is not None and len(entropy) <= len(raw) else (Codec.RAW, raw)
    if codec == "auto":
        raw = packed.tobytes()
        candidates = [(Codec.RAW, raw), (Codec.SPARSE, _sparse_encode(packed, bits.size))]
        if (
            model is not None
            and (entropy := _entropy_encode(bits, tuple(spikes.shape), model, chunks, previous)) is not None
        ):
            candidates.append((Codec.ENTROPY, entropy))
        return min(candidates, key=lambda candidate: len(candidate[1]))  # a tie keeps the earlier: raw first
    raise SpikeCodecError(f"unknown codec {codec!r}; expected one of {', '.join(CODEC_CHOICES)}")


def _entropy_encode(
    bits: np.ndarray,
    shape: tuple[int, ...],
    model: SpikeContextModel | None,
    chunks: int,
    previous: PreviousStep | None,
) -> bytes | None:
    """The entropy payload; None where a chunk would be longer than the format's length field holds (a frame of
    hundreds of kilobytes in one chunk), which then goes raw."""
    if model is None:
        raise SpikeCodecError(
            "the entropy codec needs the model's entropy model; this checkpoint has none (sbn train fit-codec adds one)"
        )
    try:
        return model.encode(bits.reshape(shape).view(np.uint8), chunks, previous)
    except ChunkTooLong:
        return None
    except EntropyCodecError as e:
        raise SpikeCodecError(str(e)) from None


def _sparse_encode(packed: np.ndarray, n: int) -> bytes:
    # numpy packs in the raw codec's (big-endian) bit order; bitarray adopts those bytes as they are
    ba = bitarray(endian="big")
    ba.frombytes(packed.tobytes())
    del ba[n:]  # drop the zero padding of the last byte
    return sc_encode(ba)


# Row b is byte b's eight bits as float32 0/1, most significant first (the wire's bit order): one
# lookup per payload byte writes float32 spikes directly (for callers that want numbers: the channel model
# in training and evaluation), without a uint8 array between. The edge takes bools instead.
_FLOAT32_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)


def unpack(packed: np.ndarray, n: int, shape: tuple[int, ...], dtype: type[np.generic] = np.uint8) -> np.ndarray:
    """The first ``n`` bits of ``packed`` (uint8 [bytes], wire order) as a fresh, writable array of ``shape``, each
    0 or 1 in ``dtype``."""
    if dtype is np.bool_:  # unpackbits' bytes are 0 or 1: numpy bools as they are
        return np.unpackbits(packed, count=n).view(np.bool_).reshape(shape)
    if dtype is np.float32:
        return _FLOAT32_BITS.take(packed, axis=0).reshape(-1)[:n].reshape(shape)
    return np.unpackbits(packed, count=n).reshape(shape).astype(dtype, copy=False)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a sixth of a raw frame's whole decode
class ReceivedBits:
    """A payload's bits as read off the wire, before anything makes them a tensor."""

    bits: np.ndarray  # uint8: packed [ceil(n / 8)] in wire order (raw, sparse), else one 0/1 per spike [shape]
    packed: bool  # raw and sparse payloads stay packed, the form cheapest to move (to a GPU: spike_tensors.py)
    chunks: int  # independently decodable parts of the payload: an entropy payload's chunks, else 1
    erased: tuple[int, ...]  # the chunks that failed their check (or could not be decoded): 0 in ``bits``

    @property
    def erased_chunks(self) -> int:
        return len(self.erased)


def read_payload(
    payload: bytes,
    shape: tuple[int, ...],
    codec: Codec | str,
    model: SpikeContextModel | None = None,
    previous: PreviousStep | None = None,
) -> ReceivedBits:
    """What a receiver reads from a payload that may have crossed a lossy link: an entropy payload range-decoded,
    its chunks that fail their CRC erased (silent) rather than decoded into made-up spikes; a raw or sparse one
    checked and packed as the raw codec packs. Raises SpikeCodecError for a payload that does not fit ``shape`` at
    all (wrong length, a layout that does not parse). ``model``: the checkpoint's entropy model, needed for
    ``entropy``; ``previous``: for a stream's entropy-coded step, the step before it as received."""
    shape = tuple(shape)
    if shape and min(shape) <= 0:
        raise SpikeCodecError(f"shape {shape} has a non-positive dimension")
    known = _CODEC_OF.get(codec) if isinstance(codec, str) else None  # a Codec is its own value: one lookup for both
    if known is None:
        raise SpikeCodecError(f"unknown codec {codec!r}; expected one of raw, sparse, entropy")
    if known is Codec.ENTROPY:
        if model is None:
            raise SpikeCodecError("an entropy payload needs the model's entropy model; this checkpoint has none")
        try:
            decoded = model.decode(payload, shape, previous)
        except EntropyCodecError as e:
            raise SpikeCodecError(f"corrupt entropy payload: {e}") from None
        return ReceivedBits(decoded.bits, False, len(decoded.chunks), decoded.erased)  # [shape] uint8
    n = math.prod(shape)
    if known is Codec.RAW:
        expected = raw_length(shape)
        if len(payload) != expected:
            raise SpikeCodecError(
                f"raw payload is {len(payload)} bytes; shape {shape} ({n} bits) needs exactly {expected}"
            )
        return ReceivedBits(np.frombuffer(payload, dtype=np.uint8), True, 1, ())
    return ReceivedBits(_sparse_decode(payload, n), True, 1, ())


def _sparse_decode(payload: bytes, n: int) -> np.ndarray:
    """The payload's bits packed as the raw codec packs them (uint8, wire order)."""
    # Check the declared length before decoding: sc_decode allocates whatever the header claims,
    # so a hostile 10-byte frame could otherwise ask for terabytes. Header: byte 0 = endianness
    # flag (0x10) | number of length bytes (low nibble), then the bit count, little-endian.
    if not payload:
        raise SpikeCodecError("sparse payload is empty")
    head, width = payload[0], payload[0] & 0x0F
    if head & 0xE0 or width > 8 or len(payload) < 1 + width:
        raise SpikeCodecError(f"corrupt sparse payload: bad header byte 0x{head:02x}")
    declared = int.from_bytes(payload[1 : 1 + width], "little")
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
    return np.frombuffer(ba.tobytes(), dtype=np.uint8)
