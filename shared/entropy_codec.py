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
    2 bytes, where n > 1     the chunk table's check: CRC-16 of bytes 0 .. 2(n−1) and the payload's
                             length (u32, little-endian)
    then, chunk by chunk     its check, then its range coder's words (LE). The check is a CRC-16 where
                             the words are under 64 bytes, else a CRC-32, of: the chunk's index (u8),
                             its channel and row ranges (4 × u16), its words, and its spikes packed as
                             the raw codec packs them (C order over T, B, its channels, its rows, W')

Within a chunk, bits go in that same C order, and decoding runs one time step at a time, each step's
contexts coming from the step before (the first step's from the ``previous`` step a stream holds, or
none). A range decoder turns any bytes into some bits, so the checks are what tell a damaged chunk
from a good one, and they cover what could otherwise be mistaken:

- the words: a chunk whose bytes changed, or that begins or ends elsewhere, fails;
- where the chunk belongs (index, channels, rows): one chunk's bytes cannot pass as another's, as
  row bands of one channel, sharing one probability table, otherwise could;
- the spikes decoded: a stream step decoded from a wrong previous step fails;
- and the decoder must consume exactly the chunk's words: leftover or missing words fail too.

A chunk that fails is *erased* (``DecodedSpikes.erased``: its part comes back silent and flagged),
never delivered as made-up spikes, and the caller decides whether a partly erased frame is worth
running. A payload whose chunk table does not parse, or fails its own check, is erased whole: it is the
codec's error, and no chunk boundary is ever guessed. The chance that damage passes a check is about
2^-16 (1.5e-5) for a CRC-16 and 2^-32 (2.3e-10) for a CRC-32, for damage that looks random to the CRC;
a burst of up to 16 (32) bits is always caught. The small check keeps the fixed cost of a small
frame low: a chunk of 16 coded bytes spends 2 on its check, not 4.
"""

from __future__ import annotations

import binascii
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import constriction
import numpy as np

from .errors import ConfigError, SpikeBottleNetError

WORD_BYTES = 4  # the range coder's words are uint32
SMALL_CHUNK_BYTES = 64  # a chunk whose words are fewer bytes than this is checked by a CRC-16, else a CRC-32
TABLE_CHECK_BYTES = 2  # the chunk table's CRC-16, where there are several chunks
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


def check_bytes(word_bytes: int) -> int:
    """The size of the check of a chunk whose range coder words are ``word_bytes`` long: CRC-16 or CRC-32."""
    return 2 if word_bytes < SMALL_CHUNK_BYTES else 4


def chunk_check(index: int, chunk: Chunk, words: bytes, spikes: np.ndarray) -> bytes:
    """Chunk ``index``'s check: a CRC of where it belongs (index, channel and row ranges), its ``words`` and the
    ``spikes`` [T, B, c, h, W] (0/1) they code, ``check_bytes(len(words))`` long, little-endian."""
    where = (
        bytes([index])
        + np.array(
            [chunk.channels.start, chunk.channels.stop, chunk.rows.start, chunk.rows.stop], dtype="<u2"
        ).tobytes()
    )
    covered = where + words + np.packbits(spikes).tobytes()
    if check_bytes(len(words)) == 2:
        return binascii.crc_hqx(covered, 0xFFFF).to_bytes(2, "little")  # CRC-16/CCITT, all-ones start
    return zlib.crc32(covered).to_bytes(4, "little")


def table_check(table: bytes, payload_bytes: int) -> bytes:
    """The check of a chunk ``table`` (the count and the lengths): a CRC-16 of it and the whole payload's length."""
    return binascii.crc_hqx(table + payload_bytes.to_bytes(4, "little"), 0xFFFF).to_bytes(TABLE_CHECK_BYTES, "little")


def _last_chunk_words(rest: int) -> int | None:
    """The length of the last chunk's words when its check and words are ``rest`` bytes; None where no check size
    and whole number of words make ``rest``."""
    for check in (2, 4):
        words = rest - check
        if words >= 0 and words % WORD_BYTES == 0 and check_bytes(words) == check:
            return words
    return None


@dataclass(frozen=True)
class ChunkSpan:
    """Where one chunk lies in a payload: its check at [check, words), its range coder words at [words, stop)."""

    check: int
    words: int
    stop: int


@dataclass(frozen=True)
class DecodedSpikes:
    bits: np.ndarray  # [T, B, C', H', W'] uint8; an erased chunk's part all 0
    chunks: list[Chunk]  # the payload's chunks, in order
    erased: tuple[int, ...]  # the chunks that failed their check (or that the range decoder refused)

    @property
    def intact(self) -> bool:
        return not self.erased


@dataclass(frozen=True)
class PreviousStep:
    """What a stream's step t is coded against: step t−1 as this end holds it, and which chunks leave it out.

    The edge holds step t−1 as it received it, so a chunk erased at t−1 leaves it without that chunk's
    contexts for step t. The rule both ends follow: the edge reports every erased chunk in its answer to the
    step (``LinkDamage.erased_chunk_indices``); the device codes that chunk *fresh* (contexts as at a first step,
    ``SpikeStep.fresh_chunks``) in the next step it sends after learning of it; until a fresh step of it arrives,
    the edge erases the chunk without decoding it (``unknown``), so no step is ever decoded from a guess."""

    bits: np.ndarray  # [1, B, C', H', W'] 0/1: step t−1 (an unknown chunk's part all 0)
    fresh: frozenset[int] = frozenset()  # chunks of step t coded without step t−1
    unknown: frozenset[int] = frozenset()  # chunks whose step t−1 this end does not hold (erased on the way)

    def of(self, index: int, chunk: Chunk) -> np.ndarray | None:
        """Chunk ``index``'s part of step t−1 [1, B, c, h, W] as its contexts use it; None where it is coded fresh."""
        return None if index in self.fresh else chunk.of(self.bits)

    def lost(self, index: int) -> bool:
        """Whether chunk ``index`` of step t cannot be decoded here: coded against a step t−1 this end lacks."""
        return index in self.unknown and index not in self.fresh


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

    def encode(self, bits: np.ndarray, chunks: int = 1, previous: PreviousStep | None = None) -> bytes:
        """``bits`` [T, B, C, H, W] uint8 0/1 -> the payload, coded in ``chunks`` independent chunks; ``previous``:
        a stream's step before the first, which the decoder holds too, and the chunks coded without it."""
        self._check_channels(bits.shape)
        layout = chunk_layout(self.channels, bits.shape[3], chunks)
        coded, lengths = [], []
        for index, chunk in enumerate(layout):
            part = chunk.of(bits)  # [T, B, c, h, W]; its contexts from its own bits only (zeros beyond its edges)
            p = self._p_fire(chunk, contexts(part, None if previous is None else previous.of(index, chunk)))
            encoder = constriction.stream.queue.RangeEncoder()
            encoder.encode(part.reshape(-1).astype(np.int32), _BERNOULLI, p.reshape(-1))
            words = encoder.get_compressed().astype("<u4").tobytes()
            if len(words) // WORD_BYTES > MAX_CHUNK_WORDS:
                raise ChunkTooLong(
                    f"a chunk codes to {len(words)} bytes, beyond the format's "
                    f"{MAX_CHUNK_WORDS * WORD_BYTES}; use more chunks"
                )
            coded.append(chunk_check(index, chunk, words, part) + words)
            lengths.append((len(words) // WORD_BYTES).to_bytes(2, "little"))
        table = bytes([len(layout)]) + b"".join(lengths[:-1])
        body = b"".join(coded)
        if len(layout) == 1:
            return table + body
        return table + table_check(table, len(table) + TABLE_CHECK_BYTES + len(body)) + body

    def decode(self, payload: bytes, shape: tuple[int, ...], previous: PreviousStep | None = None) -> DecodedSpikes:
        """The bits [T, B, C, H, W] (uint8) of ``payload``, chunks that fail their check erased (silent); raises
        EntropyCodecError for a payload whose layout cannot be this model's coding of ``shape``. ``previous``:
        a stream's step before the first as this end holds it; a chunk coded against a part of it this end lacks
        is erased undecoded."""
        self._check_channels(shape)
        if previous is not None and previous.bits.shape != (1, *shape[1:]):
            raise EntropyCodecError(
                f"the previous step is shaped {previous.bits.shape}, not (1, {', '.join(map(str, shape[1:]))})"
            )
        spans = self._chunk_spans(payload, shape)
        layout = chunk_layout(self.channels, shape[3], len(spans))
        bits = np.zeros(shape, dtype=np.uint8)
        erased = []
        for index, (chunk, span) in enumerate(zip(layout, spans, strict=True)):
            if previous is not None and previous.lost(index):
                erased.append(index)
                continue
            words = payload[span.words : span.stop]
            part = self._decode_chunk(
                words, chunk, chunk.of(bits).shape, None if previous is None else previous.of(index, chunk)
            )
            if part is None or chunk_check(index, chunk, words, part) != payload[span.check : span.words]:
                erased.append(index)
            else:
                chunk.of(bits)[...] = part
        return DecodedSpikes(bits, layout, tuple(erased))

    def _p_fire(self, chunk: Chunk, context: np.ndarray) -> np.ndarray:
        """P(bit = 1) of a chunk's bits whose contexts are ``context`` [T or 1, B, c, h, W]."""
        channel = np.arange(self.channels)[chunk.channels][None, None, :, None, None]
        return self.p_fire[channel, context]

    def _chunk_spans(self, payload: bytes, shape: tuple[int, ...]) -> list[ChunkSpan]:
        """Where each chunk (its check, then its words) lies in ``payload``; raises EntropyCodecError for a chunk
        table that does not parse, fails its check, or claims more bytes than any coding of ``shape`` takes."""
        if not payload:
            raise EntropyCodecError("entropy payload is empty")
        chunks = payload[0]  # chunk_layout refuses a count this shape cannot be cut into
        chunk_layout(self.channels, shape[3], chunks)
        table_end = 1 + 2 * (chunks - 1)
        start = table_end + (TABLE_CHECK_BYTES if chunks > 1 else 0)
        if len(payload) < start:
            raise EntropyCodecError(f"entropy payload of {len(payload)} bytes is too short for {chunks} chunks")
        if chunks > 1 and payload[table_end:start] != table_check(payload[:table_end], len(payload)):
            raise EntropyCodecError("entropy payload: its chunk table fails its check (a damaged frame, erased whole)")
        word_bytes = [WORD_BYTES * int.from_bytes(payload[1 + 2 * i : 3 + 2 * i], "little") for i in range(chunks - 1)]
        last = _last_chunk_words(len(payload) - start - sum(check_bytes(w) + w for w in word_bytes))
        if last is None:
            raise EntropyCodecError(f"entropy payload: its chunk lengths do not add up to its {len(payload)} bytes")
        word_bytes.append(last)
        # A legal chunk spends at most MAX_BITS_PER_SYMBOL bits per spike, plus the coder's flush: a payload
        # claiming more is refused before a decoder is built for it.
        bits_total = math.prod(shape)
        if 8 * sum(word_bytes) > bits_total * MAX_BITS_PER_SYMBOL + 64 * chunks:
            raise EntropyCodecError(
                f"entropy payload of {len(payload)} bytes is longer than any coding of {bits_total} bits"
            )
        spans = []
        for words in word_bytes:
            check = start + check_bytes(words)
            spans.append(ChunkSpan(start, check, check + words))
            start = check + words
        return spans

    def _decode_chunk(
        self, words: bytes, chunk: Chunk, shape: tuple[int, ...], previous: np.ndarray | None
    ) -> np.ndarray | None:
        """One chunk's bits [T, B, c, h, W], or None where the range decoder refuses its words or does not use
        exactly all of them."""
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
        # a chunk ends where its words end: words left over, or read past the end, mean they are not this coding
        return bits if decoder.maybe_exhausted() else None

    def _check_channels(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 5 or shape[2] != self.channels:
            raise EntropyCodecError(
                f"the entropy model is for frames of {self.channels} channels (T, B, C', H', W'), "
                f"not shape {tuple(shape)}"
            )
