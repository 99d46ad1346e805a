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
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING

from spikebottlenet.shared.uncertainty import max_softmax

from .classification import Classification, Latency, LinkDamage, SplitChoice, build_classification
from .deadline import Deadline
from .edge_client import StreamReply
from .head_set import ServedHead

if TYPE_CHECKING:
    from .pipeline import SplitPipeline


async def classify_streamed(pipeline: SplitPipeline, head: ServedHead, image: bytes, deadline: Deadline,
                            early_exit: float | None, choice: SplitChoice | None = None, include_logits: bool = False,
                            include_spikes: bool = False) -> Classification:
    """Raises ImageError for an unreadable image, HeadTimeout when the deadline passes while the head works, and
    EdgeError when the edge returns no logits."""
    start = perf_counter()
    runner = head.runner
    num_classes = runner.checkpoint.config.backbone.num_classes
    # not counted against the head's queue, which it never joins: classify() bounds the open streams instead
    model_input, decode_ms = await pipeline.decode_one(head, image, deadline, queued=False)
    stream = await pipeline.run_on_head_thread(runner.open_stream, model_input, deadline=deadline)
    device_ms = decode_ms  # the device's time covers decoding the upload, as on the unstreamed path

    async def compute_step():  # the next step on the head thread, timed
        nonlocal device_ms
        started = perf_counter()
        message = await pipeline.run_on_head_thread(stream.step, deadline=deadline)
        device_ms += (perf_counter() - started) * 1e3
        return message

    sent, replies = [], []
    async with pipeline.edge.stream(deadline) as edge:
        next_step = asyncio.ensure_future(compute_step())
        try:
            for t in range(stream.time_steps):
                message = await next_step
                await edge.send(await pipeline.through_channel(message))
                sent.append(message)
                if t + 1 < stream.time_steps:  # the head works on step t + 1 while the edge runs step t
                    next_step = asyncio.ensure_future(compute_step())
                if early_exit is not None:
                    replies.append(await edge.receive(num_classes))
                    if confident(replies[-1], early_exit):
                        break
            await edge.done_sending()
            while len(replies) < len(sent):
                replies.append(await edge.receive(num_classes))
        except BaseException:
            next_step.cancel()  # nobody needs the step made ahead (its head work, once started, finishes unseen)
            raise
        # A step made ahead that will not be sent: still computed, still counted (and within the deadline: a
        # HeadTimeout from it is this request's). Every step started has now finished.
        await next_step
    last = replies[-1]
    computed = len(stream.energy)
    output = stream.output(sent, computed)
    # device and edge time overlap: each is its own sum, and no network figure is their difference
    latency = Latency(device=device_ms, edge=sum(reply.edge_ms for reply in replies),
                      total=(perf_counter() - start) * 1e3)
    damage = [LinkDamage.of(output.frame, reply.damage) for reply in replies]
    message_bytes = sum(m.ByteSize() for m in sent)
    return build_classification(
        last.logits[0], output, runner.checkpoint, latency, include_logits, include_spikes,
        transmit_mj=pipeline.link.prior.transmit_mj(message_bytes), split_choice=choice,
        link_damage=LinkDamage.total(damage), message_bytes=message_bytes,
        time_steps_sent=len(sent), time_steps_computed=computed, early_exit=early_exit)


def confident(reply: StreamReply, threshold: float) -> bool:
    """Whether the running logits already give some class at least ``threshold`` of the softmax."""
    return float(max_softmax(reply.logits[0])) >= threshold
