"""One classification streamed over time steps (``InferStream``), with optional early exit.

    device   head step 0 | head step 1 | head step 2 | ...          (one step per call, state kept)
    link           -> step 0      -> step 1      -> step 2
    edge                 tail step 0 | tail step 1 | tail step 2      (running logits after each)

Step t's spikes leave as soon as the head has made them, and the head starts on step t + 1 at once, so
the device's step t + 1 overlaps the edge's step t. Without early exit every step is sent as it is
made and the answer is the last running logits: the unary answer, bit for bit.

Early exit (``early_exit=p``): the answer stops at the first step whose running logits give some class a
softmax probability of at least p. Then a step is sent only once the edge's answer to the one before
says to go on, so which steps are sent depends on the logits alone, not on timing; the head still
works ahead on the next step meanwhile, and a step it has made when the stream stops is computed but
not sent. The answer reports both counts; its bytes are those sent, its energy that of the steps
computed.

A chunk of an entropy-coded step that the edge erased leaves the edge without that chunk's contexts for
the next step: the edge reports it in its answer, and the next step computed after that codes the chunk
fresh (``ChunkResets``; the rule is PreviousStep's in shared/entropy_codec.py). The answers are read as
they come, while later steps are made, so a reset comes a step or two after the erasure, not at the end.

The pipeline (device/pipeline.py) chooses this path and hands it what it needs: the image decoded, the
model's head, the thread heads run on, the edge, the lossy channel (if any) and the deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from spikebottlenet.shared.uncertainty import max_softmax
from spikebottlenet.v1 import split_inference_pb2 as pb

from .classification import LinkDamage, StreamSteps
from .deadline import Deadline
from .edge_client import EdgeClient, StreamReply
from .head_queue import HeadThread
from .head_runner import HeadRunner, ImageSpikes, ModelInput
from .lossy_channel import LossyChannel


@dataclass(frozen=True)
class StreamedImage:
    """What streaming one image measured."""

    spikes: ImageSpikes  # the steps sent (their frame, their spikes) and the energy of the steps computed
    logits: np.ndarray  # float32 [num_classes]: the running logits of the last step sent
    device_ms: float  # the head's steps, each timed on the head thread
    edge_ms: float  # the edge's steps added up (they overlap the device's: no network figure is their difference)
    message_bytes: int  # the SpikeStep messages sent, added up
    link_damage: LinkDamage  # the steps' added up
    steps: StreamSteps


class ChunkResets:
    """Which entropy chunks the next step codes fresh: those the edge reported erased at a step no later than the
    chunk's last fresh start (after a later fresh start the edge holds the chunk again, if that arrived)."""

    def __init__(self) -> None:
        self._fresh_at: dict[int, int] = {}  # chunk -> the last step it was coded fresh
        self._pending: set[int] = set()

    def report(self, step: int, erased: Iterable[int]) -> None:
        """The edge's answer to ``step``: these chunks were erased."""
        self._pending.update(chunk for chunk in erased if self._fresh_at.get(chunk, -1) <= step)

    def take(self, step: int) -> frozenset[int]:
        """The chunks ``step`` codes fresh: every pending reset, done."""
        fresh = frozenset(self._pending)
        self._pending.clear()
        self._fresh_at.update(dict.fromkeys(fresh, step))
        return fresh


async def stream_image(
    head: HeadRunner,
    image: ModelInput,
    thread: HeadThread,
    edge: EdgeClient,
    channel: LossyChannel,
    deadline: Deadline,
    early_exit: float | None,
) -> StreamedImage:
    """``image`` through ``head`` and the edge one time step per message; raises HeadTimeout when the deadline passes
    while the head works, and EdgeError when the edge returns no logits."""
    num_classes = head.checkpoint.config.backbone.num_classes
    stream = await thread.run(head.open_stream, image, deadline=deadline)
    device_ms = 0.0
    resets = ChunkResets()

    async def compute_step(t: int) -> pb.SpikeStep:  # step t on the head thread, timed
        nonlocal device_ms
        started = perf_counter()
        message = await thread.run(stream.step, resets.take(t), deadline=deadline)
        device_ms += (perf_counter() - started) * 1e3
        return message

    sent: list[pb.SpikeStep] = []
    replies: list[StreamReply] = []

    async def receive() -> None:  # the next answer, its erasures noted for the steps still to be made
        reply = await call.receive(num_classes)
        resets.report(reply.step, reply.damage.erased_chunk_indices)
        replies.append(reply)

    async def receive_all() -> None:  # without early exit: every answer, read while the later steps are made
        while len(replies) < stream.time_steps:
            await receive()

    async with edge.stream(deadline) as call:
        next_step = asyncio.ensure_future(compute_step(0))
        reader: asyncio.Future[None] | None = None
        try:
            for t in range(stream.time_steps):
                message = await next_step
                await call.send(await channel.deliver(message))
                sent.append(message)
                if t + 1 < stream.time_steps:  # the head works on step t + 1 while the edge runs step t
                    next_step = asyncio.ensure_future(compute_step(t + 1))
                if early_exit is None:
                    reader = reader or asyncio.ensure_future(receive_all())  # once the call is open
                else:
                    await receive()
                    if confident(replies[-1], early_exit):
                        break
            await call.done_sending()
            if reader is not None:
                await reader
            while len(replies) < len(sent):
                await receive()
        except BaseException:
            next_step.cancel()  # nobody needs the step made ahead (its head work, once started, finishes unseen)
            if reader is not None:
                reader.cancel()
            raise
        # A step made ahead that will not be sent: still computed, still counted (and within the deadline: a
        # HeadTimeout from it is this request's). Every step started has now finished.
        await next_step
    computed = len(stream.energy)
    spikes = stream.output(sent, computed)
    return StreamedImage(
        spikes,
        replies[-1].logits[0],
        device_ms,
        sum(reply.edge_ms for reply in replies),
        sum(m.ByteSize() for m in sent),
        LinkDamage.total([LinkDamage.of(spikes.frame, reply.damage) for reply in replies]),
        StreamSteps(len(sent), computed, early_exit),
    )


def confident(reply: StreamReply, threshold: float) -> bool:
    """Whether the running logits already give some class at least ``threshold`` of the softmax."""
    return float(max_softmax(reply.logits[0])) >= threshold
