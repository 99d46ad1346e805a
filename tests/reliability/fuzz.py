"""Byte-level mutation, as a fuzzer does it: shared by the image and the spike-frame fuzz runs."""

from __future__ import annotations

import random


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with 1 to 8 edits: a byte overwritten, a run set to an extreme value, a span cut out or inserted."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at, op = rng.randrange(len(out) + 1), rng.random()
        if op < 0.5 and at < len(out):
            out[at] = rng.randrange(256)
        elif op < 0.7:
            out[at : at + 4] = bytes([rng.choice((0x00, 0x7F, 0x80, 0xFF))]) * 4
        elif op < 0.85:
            del out[at : at + rng.randint(1, 32)]
        else:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(out)
