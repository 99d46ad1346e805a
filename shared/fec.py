"""Forward error correction for payloads that cross a lossy link: Reed–Solomon over GF(2^8) (``reedsolo``).

A protected payload is the payload cut into blocks of 255 − p bytes, each followed by its p parity
bytes (the last block shorter): a systematic code, so the payload's own bytes travel unchanged and a
receiver can always fall back to them. Each block corrects up to p/2 damaged bytes wherever they lie
(the byte is the symbol: a burst of flipped bits inside one byte costs one), and twice as many whose
place it is told: a lower layer that knows which bytes it lost (a byte-erasure link, a part of the
frame that never arrived) hands their positions over as *erasures* (``recover``'s ``lost``), and a
block then recovers e erasures and E errors as long as e + 2E <= p. With more erasures than p a block
is detected and left as it arrived, never decoded; with exactly p erasures it has no redundancy left to
notice one more unflagged error, so a link that both loses and flips bytes should leave a margin.

A block with more errors than that is, as a rule, detected, left as it arrived (parity dropped) and
counted: a raw payload then degrades by its flipped spikes as it would without FEC, an entropy
payload's chunk checks catch what is left. Not always: beyond its capacity a Reed–Solomon decoder
may "correct" a block to a wrong codeword without noticing. With 2 or 4 parity bytes that happens to
most such blocks, so p is at least 8 here (with p + 4 damaged bytes: 4 of 150 blocks miscorrected at
p = 8, none seen at 16); the counters are what the decoder reported.

Overhead: p parity bytes per started block of 255 − p payload bytes (``protected_length``), e.g. 16
per 239 bytes (6.7 %) at p = 16.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import reedsolo

from .errors import SpikeBottleNetError

BLOCK_BYTES = 255  # a Reed–Solomon codeword over GF(2^8): message + parity
MIN_PARITY_BYTES = 8  # below it, a block beyond repair is mostly miscorrected rather than detected
MAX_PARITY_BYTES = 64  # at most 34 % overhead (64 per 191), so a protected frame stays within the edge's limit


class FecError(SpikeBottleNetError, ValueError):
    """A parity setting, or a protected payload, that cannot be what the code makes."""


def check_parity(parity: int) -> None:
    if parity and (not MIN_PARITY_BYTES <= parity <= MAX_PARITY_BYTES or parity % 2):
        raise FecError(
            f"Reed–Solomon parity is 0 (none) or an even number of bytes per block, "
            f"{MIN_PARITY_BYTES}..{MAX_PARITY_BYTES} (p corrects p/2 bytes), not {parity}"
        )


def protected_length(payload_bytes: int, parity: int) -> int:
    """The bytes a payload of ``payload_bytes`` takes once protected: p parity bytes per started block."""
    return payload_bytes + parity * math.ceil(payload_bytes / (BLOCK_BYTES - parity)) if parity else payload_bytes


@dataclass(frozen=True)
class Recovered:
    payload: bytes  # the payload as corrected (blocks beyond repair as they arrived)
    corrected_bytes: int  # bytes the code put right, payload or parity
    failed_blocks: int  # blocks with more damage than the parity corrects


def protect(payload: bytes, parity: int) -> bytes:
    check_parity(parity)
    return bytes(reedsolo.RSCodec(parity, nsize=BLOCK_BYTES).encode(payload)) if parity and payload else payload


def recover(received: bytes, parity: int, lost: Collection[int] = ()) -> Recovered:
    """The payload ``received`` protects; ``lost``: positions in ``received`` that the link reports lost (their
    bytes are placeholders), decoded as erasures. Raises FecError for a length no protected payload has, or a lost
    position outside it."""
    check_parity(parity)
    if not parity:
        return Recovered(received, 0, 0)
    tail = len(received) % BLOCK_BYTES
    if not received or 0 < tail <= parity:
        raise FecError(
            f"{len(received)} bytes cannot be a payload protected with {parity} parity bytes per block: "
            f"its last block would hold no payload"
        )
    positions = sorted(set(lost))
    if positions and not 0 <= positions[0] <= positions[-1] < len(received):
        raise FecError(f"lost byte positions must lie in the {len(received)} bytes received, not {positions[-1]}")
    code = reedsolo.RSCodec(parity, nsize=BLOCK_BYTES)
    parts, corrected, failed = [], 0, 0
    for start in range(0, len(received), BLOCK_BYTES):
        block = received[start : start + BLOCK_BYTES]
        erasures = [position - start for position in positions if start <= position < start + len(block)]
        try:
            message, _, errata = code.decode(block, erase_pos=erasures or None)
        except reedsolo.ReedSolomonError:  # more errors than it corrects, or more erasures than p
            parts.append(block[:-parity])  # systematic: the payload's bytes as they arrived
            failed += 1
        else:
            parts.append(bytes(message))
            corrected += len(errata)
    return Recovered(b"".join(parts), corrected, failed)
