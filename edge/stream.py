"""One streamed frame on the edge (``InferStream``): its steps checked against its first message, run
through the tail one at a time with the stream's own neuron state.

    first message   names the frame (fingerprint, split point, shape T, B, C', H', W', codec, parity),
                    checked as a unary frame is (TailRunner.check), and carries step 0
    every message   step t in order, its spikes [1, B, C', H', W'] packed on their own
    every answer    the running logits after step t (the mean over steps 0..t)

The state lives here, not in the model: when the stream ends, however it ends (the device's early
exit, a cancel, a deadline, a refusal), it goes with this object.
"""

from __future__ import annotations

from time import perf_counter

import numpy as np
import torch

from spikebottlenet.shared.entropy_codec import PreviousStep
from spikebottlenet.shared.neuron import StepState
from spikebottlenet.v1 import split_inference_pb2 as pb

from .tail_runner import InvalidFrame, TailRunner

# The fields that name a frame; on a later message each is either left empty or repeats the first message's.
# The codec is each step's own: "auto" may pack a silent step sparse and a busy one raw.
HEADER_FIELDS = ("request_id", "model_fingerprint", "split_point", "shape", "fec_parity_bytes")


class SpikeStream:
    def __init__(self, runner: TailRunner, first: pb.SpikeStep) -> None:
        """Raises FrameError naming what in ``first`` does not fit ``runner``'s model."""
        self.runner = runner
        self.shape, _ = runner.check(first)  # T, B, C', H', W': T the most steps this stream may send
        self.first = first
        self.state = StepState()  # the tail's neurons and running mean, this stream's alone
        self.steps = 0
        self._previous: np.ndarray | None = None  # the last step as received [1, B, C', H', W'] uint8 (entropy)
        self._unknown: frozenset[int] = frozenset()  # its chunks erased: their next step decodes only if fresh

    def run(self, message: pb.SpikeStep) -> pb.RunningLogits:
        """The running logits after ``message``'s step; raises InvalidFrame for a message that disagrees with the
        stream, comes out of order or beyond T, or whose payload does not decode."""
        self._check_agrees(message)
        if self.steps >= self.shape[0]:
            raise InvalidFrame(f"too many steps: step {message.step} after all T = {self.shape[0]} of the frame")
        if message.step != self.steps:
            raise InvalidFrame(f"step {message.step} out of order: the stream expects step {self.steps} next")
        step_shape = (1, *self.shape[1:])
        previous = (
            None
            if self._previous is None
            else PreviousStep(self._previous, frozenset(message.fresh_chunks), self._unknown)
        )
        decoded = self.runner.decode_payload(
            message.payload,
            step_shape,
            self.runner.codec_of(message),
            self.first.fec_parity_bytes,
            message.lost_bytes,
            previous,
        )
        start = perf_counter()
        logits = self.runner.step(decoded.spikes, self.state)  # [B, num_classes]
        inference_ms = (perf_counter() - start) * 1e3
        self._previous = decoded.spikes.to(torch.uint8).numpy(force=True)  # from a GPU too
        self._unknown = frozenset(decoded.damage.erased_chunk_indices)
        self.steps += 1
        batch, classes = logits.shape
        return pb.RunningLogits(
            request_id=self.first.request_id,
            step=message.step,
            batch_size=batch,
            num_classes=classes,
            values=logits.reshape(-1).tolist(),
            decode_ms=decoded.decode_ms,
            inference_ms=inference_ms,
            damage=decoded.damage,
            model_fingerprint=self.runner.fingerprint,
        )

    def _check_agrees(self, message: pb.SpikeStep) -> None:
        if message is self.first:
            return
        for name in HEADER_FIELDS:
            value, first = getattr(message, name), getattr(self.first, name)
            if name == "shape":
                value, first = list(value), list(first)
            if value and value != first:
                raise InvalidFrame(
                    f"the message for step {message.step} disagrees with the stream's first message: "
                    f"{name} {value!r}, not {first!r}"
                )
