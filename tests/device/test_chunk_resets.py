"""The device's side of a stream's recovery rule (shared/entropy_codec.py, PreviousStep): a chunk the edge reported
erased is coded fresh in the next step made after the report, once; a report the fresh start already answered
asks for nothing more."""

from __future__ import annotations

from spikebottlenet.device.streaming import ChunkResets


def test_a_reported_chunk_is_coded_fresh_once_in_the_next_step_made() -> None:
    resets = ChunkResets()
    assert resets.take(1) == frozenset()
    resets.report(1, [3])  # step 1's chunk 3 erased; step 2 was already made without knowing
    assert resets.take(3) == {3}
    # the edge then erases step 2's chunk 3 undecoded (its step before lost): step 3's fresh start answers that
    resets.report(2, [3])
    assert resets.take(4) == frozenset()


def test_a_fresh_step_erased_in_turn_is_reset_again() -> None:
    resets = ChunkResets()
    resets.report(0, [1, 2])
    assert resets.take(1) == {1, 2}
    resets.report(1, [2])  # the fresh step 1 of chunk 2 was damaged too
    assert resets.take(2) == {2}
    assert resets.take(3) == frozenset()
