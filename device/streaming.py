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

The pipeline (device/pipeline.py) chooses this path and hands it what it needs: the image decoded, the
model's head, the thread heads run on, the edge, the lossy channel (if any) and the deadline.
"""

from __future__ import annotations

import asyncio
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

    async def compute_step() -> pb.SpikeStep:  # the next step on the head thread, timed
        nonlocal device_ms
        started = perf_counter()
        message = await thread.run(stream.step, deadline=deadline)
        device_ms += (perf_counter() - started) * 1e3
        return message

    sent: list[pb.SpikeStep] = []
    replies: list[StreamReply] = []
    async with edge.stream(deadline) as call:
        next_step = asyncio.ensure_future(compute_step())
        try:
            for t in range(stream.time_steps):
                message = await next_step
                await call.send(await channel.deliver(message))
                sent.append(message)
                if t + 1 < stream.time_steps:  # the head works on step t + 1 while the edge runs step t
                    next_step = asyncio.ensure_future(compute_step())
                if early_exit is not None:
                    replies.append(await call.receive(num_classes))
                    if confident(replies[-1], early_exit):
                        break
            await call.done_sending()
            while len(replies) < len(sent):
                replies.append(await call.receive(num_classes))
        except BaseException:
            next_step.cancel()  # nobody needs the step made ahead (its head work, once started, finishes unseen)
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
