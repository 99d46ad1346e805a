"""Context-adaptive entropy coding of spike frames: a per-channel Markov model over time steps and
constriction's range coder.

Transmitted spikes are far from independent: a neuron that fired at step t−1 fires again at step t
with probability ~0.7, one that was silent with ~0.1, and a neuron whose neighbours fired is likelier
to fire too. The model gives every bit a probability from its context, all of it known to the decoder
when it reaches step t:

    p[c, k] = P(s_t = 1 | channel c, context k)
    k = 0                          at t = 0 (no earlier step)
    k = 1 + 4 * s_t−1 + n(t−1)     else: the same neuron's bit one step earlier, and how many of its 8
                                   neighbours in the same channel fired then (n: 0, 1, 2-3, 4+)

and the range coder spends about −log2 P(bit) bits on it. On the demo models' test digits this goes
a few per cent below the empirical conditional entropy H(s_t | s_t−1, channel) of the spikes, which a
coder using only the neuron's own previous bit approaches. The table (C' × 9 probabilities) is fitted
on training data by counting (``transition_counts``, ``SpikeContextModel.fit``; ``sbn train
fit-codec``) and stored in the checkpoint's config, so the fingerprint covers it and both halves read
the same one.

Payload layout (the wire's CODEC_ENTROPY names the format):

    bytes 0..3   CRC-32 of the frame's raw payload (the bits packed as the raw codec packs them)
    bytes 4..    the range coder's 32-bit words, little-endian

Bits are coded in the raw codec's order (C order over T, B, C', H', W'), so a batch of frames is one
stream; decoding goes one time step at a time, each step's contexts coming from the step before.
A range decoder turns any bytes into some bits, so the CRC is what tells a corrupt or truncated
payload from a good one: a mismatch is a SpikeCodecError, never garbage spikes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import constriction
import numpy as np

HEADER_BYTES = 4
NEIGHBOUR_BUCKETS = (1, 2, 4)  # n(t-1) -> 0: none fired, 1: one, 2: two or three, 3: four or more
CONTEXTS = 1 + 2 * (len(NEIGHBOUR_BUCKETS) + 1)
# No probability is quite 0 or 1: a bit the model thought impossible still costs at most
# -log2(1e-4) = 13.3 bits instead of breaking the stream.
PROBABILITY_FLOOR = 1e-4
MAX_BITS_PER_SYMBOL = -math.log2(PROBABILITY_FLOOR) + 1  # bounds a legal payload's length

_BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)


class EntropyCodecError(ValueError):
    """A payload that is not this model's coding of a frame of this shape."""


def next_contexts(previous: np.ndarray) -> np.ndarray:
    """The contexts of step t's bits from step t−1's, ``previous`` [..., H, W] (0/1): 1 + 4 * own bit + neighbours'
    bucket, the neighbours being the 8 around it in the same channel (zeros beyond the edge)."""
    own = previous.astype(np.intp)
    height, width = own.shape[-2:]
    padded = np.pad(own, [(0, 0)] * (own.ndim - 2) + [(1, 1), (1, 1)])
    neighbours = sum(padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - own
    return 1 + (len(NEIGHBOUR_BUCKETS) + 1) * own + np.digitize(neighbours, NEIGHBOUR_BUCKETS)


def contexts(bits: np.ndarray) -> np.ndarray:
    """The context k of every bit of ``bits`` [T, B, C, H, W] (0/1): 0 at t = 0, then next_contexts."""
    context = np.zeros(bits.shape, dtype=np.intp)
    context[1:] = next_contexts(bits[:-1])
    return context


def transition_counts(bits: np.ndarray) -> np.ndarray:
    """[C, CONTEXTS, 2]: how often each channel's bits were 0 and 1 in each context; ``bits`` [T, B, C, H, W]."""
    channels = bits.shape[2]
    channel = np.broadcast_to(np.arange(channels)[None, None, :, None, None], bits.shape)
    index = (channel * CONTEXTS + contexts(bits)) * 2 + bits
    return np.bincount(index.reshape(-1), minlength=channels * CONTEXTS * 2).reshape(channels, CONTEXTS, 2)


def conditional_entropy_bits(counts: np.ndarray) -> float:
    """The empirical conditional entropy of the data ``counts`` [..., 2] came from, in bits in all: the sum over
    contexts of n_context × H(its own frequency of ones). The bound a coder using those contexts approaches on
    that data; ``own_step_counts`` gives the counts for H(s_t | s_t−1, channel)."""
    n = counts.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n > 0, counts / n, 0)
        terms = np.where(p > 0, -p * np.log2(p), 0)
    return float((n[..., 0] * terms.sum(axis=-1)).sum())


def own_step_counts(bits: np.ndarray) -> np.ndarray:
    """[C, 3, 2]: each channel's 0s and 1s at t = 0, after a 0 and after a 1 of the same neuron (neighbours
    ignored): the counts of H(s_t | s_t−1, channel), the bound a first-order coder approaches."""
    channels = bits.shape[2]
    context = np.zeros(bits.shape, dtype=np.intp)
    context[1:] = 1 + bits[:-1]
    channel = np.broadcast_to(np.arange(channels)[None, None, :, None, None], bits.shape)
    index = (channel * 3 + context) * 2 + bits
    return np.bincount(index.reshape(-1), minlength=channels * 3 * 2).reshape(channels, 3, 2)


@dataclass(frozen=True)
class SpikeContextModel:
    p_fire: np.ndarray  # [C', CONTEXTS] float64: P(bit = 1) per channel and context

    @classmethod
    def fit(cls, counts: np.ndarray) -> SpikeContextModel:
        """The model of the data ``counts`` came from: each context's frequency of ones, with one pseudo-count
        of each (Laplace), kept off 0 and 1."""
        p = (counts[..., 1] + 1) / (counts.sum(axis=-1) + 2)
        return cls(np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))

    @classmethod
    def from_config(cls, table: Sequence[Sequence[float]]) -> SpikeContextModel:
        p = np.asarray(table, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != CONTEXTS or not np.all((p > 0) & (p < 1)):
            raise ValueError(f"an entropy model is C' rows of {CONTEXTS} probabilities strictly between 0 and 1")
        return cls(p)

    def to_config(self) -> tuple[tuple[float, ...], ...]:
        """Rounded to 6 decimals: a stable JSON form for the checkpoint's config."""
        return tuple(tuple(round(float(p), 6) for p in row) for row in self.p_fire)

    @property
    def channels(self) -> int:
        return self.p_fire.shape[0]

    def probabilities(self, context: np.ndarray, channels: int) -> np.ndarray:
        """P(bit = 1) for bits of contexts ``context`` [T or 1, B, C, H, W]."""
        channel = np.arange(channels)[None, None, :, None, None]
        return self.p_fire[channel, context]

    def encode(self, bits: np.ndarray, raw_payload: bytes) -> bytes:
        """``bits`` [T, B, C, H, W] uint8 0/1 -> the payload; ``raw_payload``: the same bits packed (for the CRC)."""
        self._check_channels(bits.shape)
        p = self.probabilities(contexts(bits), bits.shape[2]).reshape(-1)
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(bits.reshape(-1).astype(np.int32), _BERNOULLI, p)
        words = encoder.get_compressed().astype("<u4").tobytes()
        return zlib.crc32(raw_payload).to_bytes(HEADER_BYTES, "little") + words

    def decode(self, payload: bytes, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """The bits [T, B, C, H, W] (uint8) of ``payload`` and the CRC-32 their raw packing must have; raises
        EntropyCodecError for a payload that cannot be this model's coding of ``shape``."""
        self._check_channels(shape)
        if len(payload) < HEADER_BYTES:
            raise EntropyCodecError(f"entropy payload of {len(payload)} bytes is shorter than its CRC")
        coded_bytes = len(payload) - HEADER_BYTES
        if coded_bytes % 4:
            raise EntropyCodecError(f"entropy payload: {coded_bytes} bytes after the header, not whole 32-bit words")
        bits_total = math.prod(shape)
        if coded_bytes * 8 > bits_total * MAX_BITS_PER_SYMBOL + 64:
            raise EntropyCodecError(f"entropy payload of {len(payload)} bytes is longer than any coding of "
                                    f"{bits_total} bits")
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4", offset=HEADER_BYTES)
                                                         .astype(np.uint32))
        t, *step_shape = shape
        bits = np.empty(shape, dtype=np.uint8)
        context = np.zeros((1, *step_shape), dtype=np.intp)
        for step in range(t):  # each step's contexts come from the step decoded before it
            p = self.probabilities(context, shape[2]).reshape(-1)
            try:
                symbols = decoder.decode(_BERNOULLI, p)
            except (AssertionError, ValueError, RuntimeError) as e:  # constriction's words for an impossible stream
                raise EntropyCodecError(f"the range decoder refused the stream: {e}") from None
            bits[step] = symbols.reshape(step_shape)
            context = next_contexts(bits[step:step + 1])
        return bits, int.from_bytes(payload[:HEADER_BYTES], "little")

    def _check_channels(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 5 or shape[2] != self.channels:
            raise EntropyCodecError(f"the entropy model is for frames of {self.channels} channels (T, B, C', H', W'), "
                                    f"not shape {tuple(shape)}")
