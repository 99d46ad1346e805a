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

Payload layout (the wire's CODEC_ENTROPY names the format). The frame is cut into n chunks
(``chunk_layout``): for n up to C', n contiguous groups of whole channels (sizes differing by at most
one, as ``numpy.array_split`` cuts them); for a multiple of C', every channel cut into n / C' bands of
rows. Each chunk's bits, all T steps of all B images, are coded as a stream of their own, with
contexts from its own bits only (neighbours beyond a band's edge count as silent), so every chunk
decodes without the others; whole channels lose nothing to the cut, since a neuron's contexts never
leave its channel.

    byte 0                   n, the number of chunks (a sender's choice: 1 for the fewest bytes, more
                             to lose less of a frame to a damaged byte)
    bytes 1 .. 2(n−1)        the coded length, in 32-bit words, of every chunk but the last (u16,
                             little-endian); the last chunk takes the rest of the payload
    then, chunk by chunk     4 bytes: CRC-32 of the chunk's spikes packed as the raw codec packs them
                             (C order over T, B, its channels, its rows, W'), then its range coder words, LE

Within a chunk, bits go in that same C order, and decoding runs one time step at a time, each step's
contexts coming from the step before (the first step's from the ``previous`` step a stream holds, or
none). A range decoder turns any bytes into some bits, so the CRC is
what tells a damaged chunk from a good one: a chunk that fails it is *erased* (``DecodedSpikes.erased``:
its part comes back silent and flagged), never delivered as made-up spikes, and the caller decides
whether a partly erased frame is worth running. A payload whose layout does not parse (chunk count,
lengths) is the codec's error.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import constriction
import numpy as np

from .errors import ConfigError, SpikeBottleNetError

CRC_BYTES = 4  # each chunk's CRC-32
WORD_BYTES = 4  # the range coder's words are uint32
MAX_CHUNK_WORDS = 0xFFFF  # a chunk's length field is a u16
NEIGHBOUR_BUCKETS = (1, 2, 4)  # n(t-1) -> 0: none fired, 1: one, 2: two or three, 3: four or more
CONTEXTS = 1 + 2 * (len(NEIGHBOUR_BUCKETS) + 1)
# No probability is quite 0 or 1: a bit the model thought impossible still costs at most
# -log2(1e-4) = 13.3 bits instead of breaking the stream.
PROBABILITY_FLOOR = 1e-4
MAX_BITS_PER_SYMBOL = -math.log2(PROBABILITY_FLOOR) + 1  # bounds a legal payload's length

_BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)


class EntropyCodecError(SpikeBottleNetError, ValueError):
    """A payload that is not this model's coding of a frame of this shape."""


class ChunkTooLong(EntropyCodecError):
    """A chunk that codes longer than the format's u16 length field holds (over 256 KiB)."""


def next_contexts(previous: np.ndarray) -> np.ndarray:
    """The contexts of step t's bits from step t−1's, ``previous`` [..., H, W] (0/1): 1 + 4 * own bit + neighbours'
    bucket, the neighbours being the 8 around it in the same channel (zeros beyond the edge)."""
    own = previous.astype(np.intp)
    height, width = own.shape[-2:]
    padded = np.pad(own, [(0, 0)] * (own.ndim - 2) + [(1, 1), (1, 1)])
    neighbours = (
        sum(padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        - own
    )
    return 1 + (len(NEIGHBOUR_BUCKETS) + 1) * own + np.digitize(neighbours, NEIGHBOUR_BUCKETS)


def contexts(bits: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """The context k of every bit of ``bits`` [T, B, C, H, W] (0/1): next_contexts of the step before, and for
    the first step 0, or next_contexts of ``previous`` [1, B, C, H, W]: the step before it, where a stream sends
    steps one by one and both ends hold the last one."""
    context = np.empty(bits.shape, dtype=np.intp)
    context[:1] = 0 if previous is None else next_contexts(previous)
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
class Chunk:
    """One independently coded part of a frame: some channels, some rows of them, all T, B and W'."""

    channels: slice
    rows: slice

    def of(self, bits: np.ndarray) -> np.ndarray:
        """This chunk's part of ``bits`` [T, B, C', H', W']: [T, B, channels, rows, W'] (a view)."""
        return bits[:, :, self.channels, self.rows]


def chunk_layout(channels: int, height: int, chunks: int) -> list[Chunk]:
    """The parts of a frame of ``channels`` × ``height`` rows coded in ``chunks`` chunks: up to C' chunks are
    contiguous runs of whole channels (sizes differing by at most one, as numpy.array_split cuts); beyond that,
    a multiple of C' cuts each channel into that many bands of rows."""
    most = min(channels * height, 255)
    if not 1 <= chunks <= most or (chunks > channels and chunks % channels):
        raise EntropyCodecError(
            f"a frame of {channels} channels of {height} rows is coded in 1..{min(channels, most)} "
            f"chunks, or a multiple of {channels} up to {most}; not {chunks}"
        )
    if chunks <= channels:
        edges = _cuts(channels, chunks)
        return [Chunk(slice(a, b), slice(0, height)) for a, b in zip(edges, edges[1:], strict=False)]
    rows = _cuts(height, chunks // channels)
    return [Chunk(slice(c, c + 1), slice(a, b)) for c in range(channels) for a, b in zip(rows, rows[1:], strict=False)]


def _cuts(n: int, parts: int) -> list[int]:
    """Where numpy.array_split cuts ``n`` items into ``parts``: the first n % parts parts one longer."""
    size, longer = divmod(n, parts)
    return [i * size + min(i, longer) for i in range(parts + 1)]


@dataclass(frozen=True)
class DecodedSpikes:
    bits: np.ndarray  # [T, B, C', H', W'] uint8; an erased chunk's part all 0
    chunks: list[Chunk]  # the payload's chunks, in order
    erased: tuple[int, ...]  # the chunks that failed their CRC (or that the range decoder refused)

    @property
    def intact(self) -> bool:
        return not self.erased


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
            raise ConfigError(f"an entropy model is C' rows of {CONTEXTS} probabilities strictly between 0 and 1")
        return cls(p)

    def to_config(self) -> tuple[tuple[float, ...], ...]:
        """Rounded to 6 decimals: a stable JSON form for the checkpoint's config."""
        return tuple(tuple(round(float(p), 6) for p in row) for row in self.p_fire)

    @property
    def channels(self) -> int:
        return self.p_fire.shape[0]

    def encode(self, bits: np.ndarray, chunks: int = 1, previous: np.ndarray | None = None) -> bytes:
        """``bits`` [T, B, C, H, W] uint8 0/1 -> the payload, coded in ``chunks`` independent chunks; ``previous``
        [1, B, C, H, W]: the step before the first, which the decoder holds too (a stream's last step)."""
        self._check_channels(bits.shape)
        layout = chunk_layout(self.channels, bits.shape[3], chunks)
        coded = []
        for chunk in layout:
            part = chunk.of(bits)  # [T, B, c, h, W]; its contexts from its own bits only (zeros beyond its edges)
            p = self._p_fire(chunk, contexts(part, None if previous is None else chunk.of(previous)))
            encoder = constriction.stream.queue.RangeEncoder()
            encoder.encode(part.reshape(-1).astype(np.int32), _BERNOULLI, p.reshape(-1))
            words = encoder.get_compressed().astype("<u4").tobytes()
            if len(words) // WORD_BYTES > MAX_CHUNK_WORDS:
                raise ChunkTooLong(
                    f"a chunk codes to {len(words)} bytes, beyond the format's "
                    f"{MAX_CHUNK_WORDS * WORD_BYTES}; use more chunks"
                )
            coded.append(zlib.crc32(np.packbits(part).tobytes()).to_bytes(CRC_BYTES, "little") + words)
        lengths = b"".join(((len(c) - CRC_BYTES) // WORD_BYTES).to_bytes(2, "little") for c in coded[:-1])
        return bytes([len(layout)]) + lengths + b"".join(coded)

    def decode(self, payload: bytes, shape: tuple[int, ...], previous: np.ndarray | None = None) -> DecodedSpikes:
        """The bits [T, B, C, H, W] (uint8) of ``payload``, chunks that fail their CRC erased (silent); raises
        EntropyCodecError for a payload whose layout cannot be this model's coding of ``shape``. ``previous``:
        the step before the first, as the encoder had it."""
        self._check_channels(shape)
        if previous is not None and previous.shape != (1, *shape[1:]):
            raise EntropyCodecError(
                f"the previous step is shaped {previous.shape}, not (1, {', '.join(map(str, shape[1:]))})"
            )
        spans = self._chunk_spans(payload, shape)
        layout = chunk_layout(self.channels, shape[3], len(spans))
        bits = np.zeros(shape, dtype=np.uint8)
        erased = []
        for index, (chunk, (start, stop)) in enumerate(zip(layout, spans, strict=True)):
            part = self._decode_chunk(
                payload[start + CRC_BYTES : stop],
                chunk,
                chunk.of(bits).shape,
                None if previous is None else chunk.of(previous),
            )
            if part is None or zlib.crc32(np.packbits(part).tobytes()) != int.from_bytes(
                payload[start : start + CRC_BYTES], "little"
            ):
                erased.append(index)
            else:
                chunk.of(bits)[...] = part
        return DecodedSpikes(bits, layout, tuple(erased))

    def _p_fire(self, chunk: Chunk, context: np.ndarray) -> np.ndarray:
        """P(bit = 1) of a chunk's bits whose contexts are ``context`` [T or 1, B, c, h, W]."""
        channel = np.arange(self.channels)[chunk.channels][None, None, :, None, None]
        return self.p_fire[channel, context]

    def _chunk_spans(self, payload: bytes, shape: tuple[int, ...]) -> list[tuple[int, int]]:
        """Where each chunk (its CRC, then its words) lies in ``payload``; raises EntropyCodecError for a layout
        that does not parse or that claims more bytes than any coding of ``shape`` takes."""
        if not payload:
            raise EntropyCodecError("entropy payload is empty")
        chunks = payload[0]  # chunk_layout refuses a count this shape cannot be cut into
        chunk_layout(self.channels, shape[3], chunks)
        start = 1 + 2 * (chunks - 1)
        if len(payload) < start + chunks * CRC_BYTES:
            raise EntropyCodecError(f"entropy payload of {len(payload)} bytes is too short for {chunks} chunks")
        sizes = [
            CRC_BYTES + WORD_BYTES * (int.from_bytes(payload[1 + 2 * i : 3 + 2 * i], "little"))
            for i in range(chunks - 1)
        ]
        last = len(payload) - start - sum(sizes)
        if last < CRC_BYTES or (last - CRC_BYTES) % WORD_BYTES:
            raise EntropyCodecError(f"entropy payload: its chunk lengths do not add up to its {len(payload)} bytes")
        # A legal chunk spends at most MAX_BITS_PER_SYMBOL bits per spike, plus the coder's flush: a payload
        # claiming more is refused before a decoder is built for it.
        bits_total = math.prod(shape)
        if 8 * (len(payload) - start - chunks * CRC_BYTES) > bits_total * MAX_BITS_PER_SYMBOL + 64 * chunks:
            raise EntropyCodecError(
                f"entropy payload of {len(payload)} bytes is longer than any coding of {bits_total} bits"
            )
        spans = []
        for size in [*sizes, last]:
            spans.append((start, start + size))
            start += size
        return spans

    def _decode_chunk(
        self, words: bytes, chunk: Chunk, shape: tuple[int, ...], previous: np.ndarray | None
    ) -> np.ndarray | None:
        """One chunk's bits [T, B, c, h, W], or None where the range decoder refuses its words."""
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        t, *step_shape = shape
        bits = np.empty(shape, dtype=np.uint8)
        context = np.zeros((1, *step_shape), dtype=np.intp) if previous is None else next_contexts(previous)
        for step in range(t):  # each step's contexts come from the step decoded before it
            try:
                symbols = decoder.decode(_BERNOULLI, self._p_fire(chunk, context).reshape(-1))
            except (AssertionError, ValueError, RuntimeError):  # constriction's words for an impossible stream
                return None
            bits[step] = symbols.reshape(step_shape)
            context = next_contexts(bits[step : step + 1])
        return bits

    def _check_channels(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 5 or shape[2] != self.channels:
            raise EntropyCodecError(
                f"the entropy model is for frames of {self.channels} channels (T, B, C', H', W'), "
                f"not shape {tuple(shape)}"
            )
