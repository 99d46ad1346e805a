"""Lossy links for experiments: what a noisy channel does to the bytes of a spike payload.

    bsc:BER                    binary symmetric: every bit flips with probability BER, independently
    erasure:P                  every byte is lost with probability P: the receiver gets zeros there, and
                               their positions (a lower layer knows what it lost), which the FEC decodes
                               as erasures (shared/fec.py)
    gilbert:P_GB,P_BG,BER_BAD[,BER_GOOD]
                               Gilbert–Elliott: a two-state Markov chain over bits, good -> bad with
                               P_GB and bad -> good with P_BG per bit; bits flip with BER_BAD in the
                               bad state, BER_GOOD (default 0) in the good one: errors come in bursts.
                               Long-run BER = (P_GB * BER_BAD + P_BG * BER_GOOD) / (P_GB + P_BG).

A raw payload degrades gracefully under them (a flipped bit is one wrong spike); an entropy payload's
damaged chunk fails its CRC and is erased (its channels silent, ``receive`` in shared/spike_tensors.py),
never the garbage a range decoder makes of damaged input. Reed–Solomon parity (shared/fec.py) in front of
the channel repairs what it can first.

The channels work on bytes with numpy alone: a device without torch applies them to what it sends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Delivery:
    """A payload as a channel delivers it: its bytes, and the positions the link reports lost (placeholders)."""

    payload: bytes
    lost: tuple[int, ...] = ()


@dataclass(frozen=True)
class BinarySymmetric:
    ber: float

    def apply(self, payload: bytes, rng: np.random.Generator) -> Delivery:
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
        bits ^= (rng.random(bits.size) < self.ber).astype(np.uint8)
        return Delivery(np.packbits(bits).tobytes())  # flipped bits go unnoticed: nothing is reported lost


@dataclass(frozen=True)
class ByteErasure:
    rate: float

    def apply(self, payload: bytes, rng: np.random.Generator) -> Delivery:
        data = np.frombuffer(payload, dtype=np.uint8).copy()
        lost = np.flatnonzero(rng.random(data.size) < self.rate)
        data[lost] = 0
        return Delivery(data.tobytes(), tuple(int(i) for i in lost))


@dataclass(frozen=True)
class GilbertElliott:
    p_good_to_bad: float
    p_bad_to_good: float
    ber_bad: float
    ber_good: float = 0.0

    @property
    def ber(self) -> float:
        """The long-run bit error rate: the stationary share of bad bits times BER_BAD, plus the good ones'."""
        bad = self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good)
        return bad * self.ber_bad + (1 - bad) * self.ber_good

    def states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """[n] bool: whether each bit is sent in the bad state; the chain starts from its stationary share."""
        bad = np.empty(n, dtype=bool)
        state = rng.random() < self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good)
        switches = rng.random(n)
        for i in range(n):
            bad[i] = state
            state = switches[i] >= self.p_bad_to_good if state else switches[i] < self.p_good_to_bad
        return bad

    def apply(self, payload: bytes, rng: np.random.Generator) -> Delivery:
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
        ber = np.where(self.states(bits.size, rng), self.ber_bad, self.ber_good)
        bits ^= (rng.random(bits.size) < ber).astype(np.uint8)
        return Delivery(np.packbits(bits).tobytes())


Channel = BinarySymmetric | ByteErasure | GilbertElliott


def parse_channel(spec: str) -> Channel:
    """``bsc:1e-3``, ``erasure:0.01`` or ``gilbert:0.01,0.3,0.1[,0]``; ValueError naming the forms otherwise."""
    forms = "bsc:BER, erasure:P or gilbert:P_GB,P_BG,BER_BAD[,BER_GOOD]"
    kind, _, values = spec.partition(":")
    try:
        numbers = [float(v) for v in values.split(",")] if values else []
    except ValueError:
        raise ConfigError(f"channel {spec!r}: the parameters must be numbers ({forms})") from None
    if not all(0 <= x <= 1 for x in numbers):
        raise ConfigError(f"channel {spec!r}: every parameter is a probability, 0..1")
    if kind == "bsc" and len(numbers) == 1:
        return BinarySymmetric(*numbers)
    if kind == "erasure" and len(numbers) == 1:
        return ByteErasure(*numbers)
    if kind == "gilbert" and len(numbers) in (3, 4) and numbers[0] + numbers[1] > 0:
        return GilbertElliott(*numbers)
    raise ConfigError(f"unknown channel {spec!r}; expected {forms}")
