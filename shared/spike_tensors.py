"""Received spike payloads as torch tensors: the receiving end of shared/codec.py, for the edge and for whatever
else runs the tail in torch (training's channel evaluation, tests, benchmarks).

shared/codec.py reads a payload into numpy bits (``read_payload``) without torch; this module makes those bits
the tensor a tail takes, on the CPU or on a GPU. Raw and sparse payloads cross to a GPU as their packed bytes and
are unpacked there (``unpack_bits``); an entropy payload is range-decoded on the CPU and crosses a byte per spike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .codec import Codec, SpikeCodecError, read_payload, unpack
from .entropy_codec import PreviousStep, SpikeContextModel

# The dtypes numpy unpacks into directly (shared/codec.py's ``unpack``), which torch then shares without a copy;
# any other is unpacked as uint8 0/1 and converted by torch.
_NUMPY_DTYPE = {torch.bool: np.bool_, torch.float32: np.float32}


def unpack_bits(packed: torch.Tensor, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The first ``n`` bits of ``packed`` (uint8 [bytes], wire order: most significant first) as bools of ``shape``,
    as torch operations on ``packed``'s device: on a GPU, the payload crosses as its packed bytes, not as spikes."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)  # [8]: bit 7 first
    bits = (packed.unsqueeze(-1) >> shifts) & 1  # [bytes, 8], each 0 or 1
    return bits.flatten()[:n].view(torch.bool).reshape(shape)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a sixth of a raw frame's whole decode
class ReceivedFrame:
    spikes: torch.Tensor  # [shape], an erased chunk's channels silent
    chunks: int  # independently decodable parts of the payload: an entropy payload's chunks, else 1
    erased: tuple[int, ...]  # the chunks that failed their check (or could not be decoded) and came back silent

    @property
    def erased_chunks(self) -> int:
        return len(self.erased)


def decode(
    payload: bytes,
    shape: tuple[int, ...],
    codec: Codec | str,
    dtype: torch.dtype = torch.float32,
    model: SpikeContextModel | None = None,
) -> torch.Tensor:
    """Unpack a payload into a binary tensor of ``shape``; raises SpikeCodecError if it does not fit, an entropy
    payload's damaged chunks included. ``model``: the checkpoint's entropy model, needed for ``entropy``."""
    received = decode_received(payload, shape, codec, dtype, model)
    if received.erased_chunks:
        raise SpikeCodecError(
            f"corrupt entropy payload: {received.erased_chunks} of its {received.chunks} chunks "
            f"fail the check the encoder recorded (a damaged, truncated or foreign payload)"
        )
    return received.spikes


def decode_received(
    payload: bytes,
    shape: tuple[int, ...],
    codec: Codec | str,
    dtype: torch.dtype = torch.float32,
    model: SpikeContextModel | None = None,
    previous: PreviousStep | None = None,
    device: torch.device | None = None,
) -> ReceivedFrame:
    """What a receiver makes of a payload that may have crossed a lossy link (shared/codec.py's ``read_payload``,
    as a tensor): the spikes, an entropy payload's chunks that fail their CRC erased (silent). Raises
    SpikeCodecError for a payload that does not fit ``shape`` at all. ``previous``: for a stream's entropy-coded
    step, the step before it as received. ``device``: a GPU to leave the spikes on,
    bools; raw and sparse payloads are unpacked there (``unpack_bits``)."""
    received = read_payload(payload, shape, codec, model, previous)
    shape = tuple(shape)
    on_gpu = device is not None and device.type != "cpu"
    if not received.packed:  # entropy: range-decoded on the CPU, [shape] uint8
        bits = torch.from_numpy(received.bits)
        return ReceivedFrame((bits.to(device) if on_gpu else bits).to(dtype), received.chunks, received.erased)
    n = math.prod(shape)
    if on_gpu:
        # a copy straight to the GPU: the payload's bytes, read-only, cannot be shared
        return ReceivedFrame(unpack_bits(torch.tensor(received.bits, device=device), n, shape).to(dtype), 1, ())
    numpy_dtype = _NUMPY_DTYPE.get(dtype)
    if numpy_dtype is None:  # any other (bfloat16 has no numpy dtype at all): uint8 0/1, converted by torch
        return ReceivedFrame(torch.from_numpy(unpack(received.bits, n, shape)).to(dtype), 1, ())
    # unpack makes a fresh writable array, which torch.from_numpy shares rather than copies
    return ReceivedFrame(torch.from_numpy(unpack(received.bits, n, shape, numpy_dtype)), 1, ())


def receive(
    payload: bytes, shape: tuple[int, ...], codec: Codec, model: SpikeContextModel | None, chunks_sent: int = 1
) -> ReceivedFrame:
    """The spikes of a payload that crossed a lossy channel (shared/channel.py): an entropy payload's chunks that fail
    their CRC come back silent (``decode_received``), and a payload that no longer decodes at all (its layout
    broken, a sparse stream cut) is lost entirely: all zeros, all the ``chunks_sent`` chunks it was sent in erased."""
    try:
        return decode_received(payload, shape, codec, model=model)
    except SpikeCodecError:
        return ReceivedFrame(torch.zeros(shape), chunks_sent, tuple(range(chunks_sent)))
