"""One classification on the split path: pick a head -> its queue -> the head -> the edge -> result.

Each request has one deadline, from its first byte (``deadline_s``, device/deadline.py): receiving
the upload, decoding it, the wait for the head, the head, the wait for a free edge call and the call
itself all come out of it, and the edge gets what is left as its gRPC deadline. Uploads are decoded
on threads of their own (device/decoder.py); torch work runs off the event loop on one dedicated
thread, batched across concurrent requests by each head's HeadBatcher.

Which head: the request's ``arch`` / ``split_point``, the default model, or with ``split_point=auto``
the planner's choice for the link as the device measures it (device/head_set.py, device/planner.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from time import perf_counter
from typing import TypeVar

import numpy as np

from spikebottlenet.shared.channel import parse_channel
from spikebottlenet.v1 import split_inference_pb2 as pb

from . import planner
from .classification import Classification, Latency, LinkDamage, SplitChoice, build_classification
from .deadline import Deadline
from .decoder import Decoded, Decoder
from .edge_client import EdgeClient, EdgeError, EdgeModelMismatch, EdgeReply
from .head_batcher import HeadBatcher, HeadQueueFull, HeadTimeout, QueuedHead
from .head_runner import HeadRunner, ModelInput
from .head_set import HeadSet, ServedHead, measure_costs
from .link_estimator import LinkEstimator
from .metrics import DeviceMetrics
from .settings import DeviceSettings
from .streaming import classify_streamed

T = TypeVar("T")
Message = TypeVar("Message", pb.SpikeFrame, pb.SpikeStep)


SWITCH_MARGIN = 0.1  # auto moves off its last split point only for one scoring at least 10 % better


class SplitPipeline:
    def __init__(self, runners: Sequence[HeadRunner], edge: EdgeClient, settings: DeviceSettings,
                 metrics: DeviceMetrics) -> None:
        """``runners``: one head per (backbone, split point), the default model's first."""
        self.edge = edge
        self.metrics = metrics
        self.settings = settings
        # Torch work runs on one thread, for every head: forwards take turns anyway (see HeadRunner).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head")
        self.decoder = Decoder(settings.max_decoded_bytes)
        self.heads = HeadSet([ServedHead(runner, self._batcher(runner), measure_costs(runner)) for runner in runners])
        self.link = LinkEstimator(settings.prior_link())
        self._last_auto: tuple[str, int] | None = None  # the (arch, split point) auto chose last
        self._open_streams = 0  # streamed requests in progress
        # experiments: a lossy channel between device and edge (off unless SBN_DEVICE_CHANNEL is set)
        self.channel = None if settings.channel is None else parse_channel(settings.channel)
        self._channel_noise = np.random.default_rng()

    def _batcher(self, runner: HeadRunner) -> HeadBatcher:
        return HeadBatcher(runner, self._executor, self.settings.batch_policy, self.settings.head_queue_limit,
                           on_run=self.metrics.ran_head)

    @property
    def head(self) -> HeadRunner:
        """The default model's head."""
        return self.heads.default.runner

    async def start(self) -> None:
        for head in self.heads.heads.values():
            head.batcher.start()

    async def close(self) -> None:
        for head in self.heads.heads.values():
            await head.batcher.stop()
        self._executor.shutdown()
        self.decoder.close()

    async def choose(self, arch: str | None, split_point: str | None,
                     deadline: Deadline) -> tuple[ServedHead, SplitChoice | None]:
        """The head a request runs, and how ``auto`` chose it; raises UnknownModel, planner.NoEligibleSplit, or
        EdgeModelMismatch when the edge serves none of the heads ``auto`` could pick."""
        head = self.heads.resolve(arch, split_point)
        if head is not None:
            return head, None
        if any(h.edge_serves is None for h in self.heads.heads.values()):
            try:  # once: which heads the edge serves, and its time for each; within the request's deadline
                await asyncio.wait_for(self.check_edge(), deadline.remaining())
            except (EdgeError, asyncio.TimeoutError):
                pass  # the planner goes on what it knows; the request itself will meet the edge's state
        candidates = self.heads.candidates(arch)
        if not candidates:
            raise EdgeModelMismatch(f"split_point=auto: the edge at {self.edge.address} serves none of this device's "
                                    f"heads ({self.heads.served()})")
        link = self.link.link()
        s = self.settings
        # an edge time not known yet counts as the slowest known: no head looks free for lack of a measurement
        slowest = max((c.costs.edge_ms for c in candidates if c.costs.edge_ms is not None), default=0.0)
        plan = planner.plan([c.profile(slowest) for c in candidates], link, s.objective, s.max_accuracy_drop,
                            s.latency_weight)
        chosen = plan.estimates.index(plan.choice)
        # Hysteresis: keep the previous choice while it scores within SWITCH_MARGIN of the best, so that the noise
        # in a link estimate does not flip auto back and forth between two close split points.
        previous = next((i for i, c in enumerate(candidates) if c.key == self._last_auto), None)
        if previous is not None and plan.estimates[previous].score <= (1 + SWITCH_MARGIN) * plan.choice.score:
            chosen = previous
        self._last_auto = candidates[chosen].key
        estimate = plan.estimates[chosen]
        choice = SplitChoice(objective=plan.objective.value, link=link.name, link_measured=self.link.measured,
                             link_rate_mbps=link.rate_mbps, link_rtt_ms=link.rtt_ms,
                             candidates=sum(e.eligible for e in plan.estimates),
                             predicted_latency_ms=estimate.latency_ms, predicted_energy_mj=estimate.energy_mj)
        return candidates[chosen], choice

    async def decode(self, head: ServedHead, images: list[bytes], deadline: Deadline, queued: bool = True) -> Decoded:
        """The images as ``head``'s model inputs, or why each cannot be one; raises HeadTimeout at the deadline.

        ``queued``: the request will join ``head``'s queue, and counts against its limit while decoding (raises
        HeadQueueFull at once when that queue is full, before decoding anything). A streamed request never joins
        it (``queued=False``): the limit on open streams bounds those instead, decoding included."""
        with head.batcher.on_its_way() if queued else nullcontext():
            decoded = await self.decoder.decode(images, head.runner.checkpoint.config, deadline)
        self.metrics.observe_decode(decoded.ms)
        return decoded

    async def decode_one(self, head: ServedHead, image: bytes, deadline: Deadline,
                         queued: bool = True) -> tuple[ModelInput, float]:
        """The image as ``head``'s model input and the milliseconds that took; raises ImageError (ImageTooLarge:
        over max_decoded_bytes) for one that cannot be read, HeadTimeout at the deadline, and with ``queued``
        HeadQueueFull as ``decode`` does."""
        decoded = await self.decode(head, [image], deadline, queued)
        if decoded.errors:
            raise decoded.errors[0]
        return decoded.inputs[0], decoded.ms

    async def run_head(self, head: ServedHead, images: dict[int, ModelInput], deadline: Deadline) -> QueuedHead:
        """The images through ``head`` (batched with other requests'), one frame for them; raises HeadQueueFull or
        HeadTimeout."""
        self.metrics.head_queue.set(head.batcher.queued)
        queued = await head.batcher.submit(images, deadline)
        self.metrics.observe_head(queued)
        batch = queued.batch
        images_in_frame = len(batch.heads)
        # compute only, as measured at start-up: decoding and preprocessing an upload cost every head the same
        head.costs.observe_head((batch.timings.head_ms + batch.timings.encode_ms) / batch.run_images,
                                sum(h.energy.device_45nm_mj for h in batch.heads.values()) / images_in_frame,
                                batch.frame.ByteSize() / images_in_frame)
        return queued

    async def through_channel(self, message: Message) -> Message:
        """``message`` as the configured lossy channel delivers it (SBN_DEVICE_CHANNEL: its payload damaged), or
        as it is without one."""
        if self.channel is None:
            return message
        damaged = type(message)()
        damaged.CopyFrom(message)
        # off the event loop: a bursty channel walks its states bit by bit
        damaged.payload = await asyncio.get_running_loop().run_in_executor(
            None, self.channel.apply, message.payload, self._channel_noise)
        return damaged

    async def run_on_head_thread(self, function: Callable[..., T], *args: object, deadline: Deadline) -> T:
        """``function(*args)`` on the thread that runs every head (torch work), within the request's deadline;
        raises HeadTimeout if the deadline passes first."""
        work = asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        try:
            return await asyncio.wait_for(work, deadline.remaining())
        except asyncio.TimeoutError:
            raise HeadTimeout(f"the {deadline.budget_s:g} s deadline passed while the head ran") from None

    async def ask_edge(self, head: ServedHead, frame: pb.SpikeFrame, deadline: Deadline) -> EdgeReply:
        """The frame's logits from the edge; raises an EdgeError subclass."""
        frame = await self.through_channel(frame)
        reply = await self.edge.infer(frame, head.runner.checkpoint.config.backbone.num_classes, deadline)
        self.metrics.observe_edge(reply)
        self.link.observe(frame.ByteSize(), reply.round_trip_ms - reply.edge_ms)
        if frame.shape[1] == 1:  # what one image waits for at the edge; a batch's figure is not per image
            head.costs.observe_edge(reply.edge_ms)
        return reply

    async def classify(self, image: bytes, deadline: Deadline, arch: str | None = None, split_point: str | None = None,
                       include_logits: bool = False, include_spikes: bool = False, stream: bool = False,
                       early_exit: float | None = None) -> Classification:
        """Raises UnknownModel / NoEligibleSplit for a model this device cannot run, ImageError for an unreadable
        image, HeadQueueFull / HeadTimeout when the head cannot take it in time, and EdgeError when the edge
        returns no logits. ``stream`` (implied by ``early_exit``): one time step per message (device/streaming.py)."""
        start = perf_counter()
        head, choice = await self.choose(arch, split_point, deadline)
        if stream or early_exit is not None:
            # Streams run their head steps on the head thread beside the batcher's runs: at most as many open
            # at once as may wait for the head, so a burst of them is refused (503) rather than queued unbounded.
            # This bounds their decoding too: they never join a head's queue, and do not count against it.
            if self._open_streams >= self.settings.head_queue_limit:
                raise HeadQueueFull(f"{self._open_streams} streamed requests are open, the most this device takes "
                                    f"(head_queue_limit); retry later")
            self._open_streams += 1
            try:
                return await classify_streamed(self, head, image, deadline, early_exit, choice, include_logits,
                                               include_spikes)
            finally:
                self._open_streams -= 1
        model_input, decode_ms = await self.decode_one(head, image, deadline)
        queued = await self.run_head(head, {0: model_input}, deadline)
        batch = queued.batch
        reply = await self.ask_edge(head, batch.frame, deadline)
        latency = Latency(device=decode_ms + batch.timings.total_ms, queue=queued.queue_ms, edge=reply.edge_ms,
                          network=reply.round_trip_ms - reply.edge_ms, total=(perf_counter() - start) * 1e3)
        return build_classification(reply.logits[0], batch.heads[0], head.runner.checkpoint, latency, include_logits,
                                    include_spikes, head_batch_images=batch.run_images,
                                    edge_batch_images=reply.edge_batch_images,
                                    transmit_mj=self.link.prior.transmit_mj(batch.frame.ByteSize()),
                                    split_choice=choice, link_damage=LinkDamage.of(batch.frame, reply.damage),
                                    edge_replica=reply.served_by or None)

    async def check_edge(self) -> pb.ModelInfo:
        """The edge's model info if it is reachable and serves at least one of the heads; raises EdgeError
        otherwise. Learns which heads it serves, and its time for each."""
        info = await self.edge.model_info()
        self.heads.learn_edge(info)
        if not any(head.edge_serves for head in self.heads.heads.values()):
            served = ", ".join(m.model_fingerprint for m in (list(info.models) or [info]))
            heads = ", ".join(f"{h.name} model {h.runner.checkpoint.fingerprint}" for h in self.heads.heads.values())
            raise EdgeModelMismatch(f"edge at {self.edge.address} serves model(s) {served}, none of this device's "
                                    f"heads ({heads})")
        return info
