"""One request on the split path: choose a model -> decode -> its head -> the edge -> one result per image.

    classify(images, options, deadline)
      choose   the model the request names, the default, or with split_point=auto the planner's choice for the
               link as the device measures it (device/model_set.py, device/planner.py)
      decode   the uploads as that model's inputs; one that cannot be read becomes its image's error
      then in one frame (POST /classify, POST /classify/batch):
        head   the model's queue: one forward shared with other requests' images, one frame for this request's
        edge   Infer: the frame's logits, one row per image
      or streamed (?stream=true, ?early_exit=p; one image): one time step per message (device/streaming.py)

Each request has one deadline, from its first byte (``deadline_s``, device/deadline.py): receiving
the upload, decoding it, the wait for the head, the head, the wait for a free edge call and the call
itself all come out of it, and the edge gets what is left as its gRPC deadline. Uploads are decoded
on threads of their own (device/decoder.py); torch work runs off the event loop on one dedicated
thread, batched across concurrent requests by each head's HeadQueue.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from time import perf_counter

from spikebottlenet.shared.preprocess import ImageError
from spikebottlenet.v1 import split_inference_pb2 as pb

from . import planner
from .classification import ImageResult, Latency, LinkDamage, SplitChoice, WireShare
from .deadline import Deadline
from .decoder import Decoded, Decoder
from .edge_client import EdgeClient, EdgeError, EdgeModelMismatch, EdgeReply
from .head_queue import HeadQueue, HeadQueueFull, HeadThread
from .head_runner import HeadRunner, JobResult, ModelInput
from .link_estimator import LinkEstimator
from .lossy_channel import LossyChannel
from .metrics import DeviceMetrics
from .model_set import ModelSet, ServedModel, measure_costs
from .settings import DeviceSettings
from .streaming import stream_image

SWITCH_MARGIN = 0.1  # auto moves off its last split point only for one scoring at least 10 % better


@dataclass(frozen=True)
class ClassifyOptions:
    """What a request asks for: the query parameters of ``POST /classify`` (``/classify/batch``: all but the last
    two). ``logits`` and ``spikes`` shape the answer (Classification.build); the rest how it is made."""

    arch: str | None = None  # the backbone; None: the default model's
    split_point: str | None = None  # k, "auto", or None: the default model's
    logits: bool = False  # also return the raw logits
    spikes: bool = False  # also return the transmitted spikes
    stream: bool | None = None  # one time step per message; None: the device's setting
    early_exit: float | None = None  # stream, and stop at this confidence; 0: no early exit; None: see with_defaults

    def with_defaults(self, stream: bool, early_exit: float | None) -> ClassifyOptions:
        """These options with the device's settings where the request left them out: ``stream`` true exactly when the
        request streams, ``early_exit`` None for none. A request for one message (stream=false) gets no early exit
        unless it asks for one, and one that asks for an early exit streams."""
        if self.early_exit is not None:
            early_exit = self.early_exit
        elif self.stream is False:
            early_exit = None
        early_exit = early_exit or None  # 0: none
        stream = stream if self.stream is None else self.stream
        return dataclasses.replace(self, stream=stream or early_exit is not None, early_exit=early_exit)


@dataclass(frozen=True)
class Classified:
    """A request's images, by their index in the request: a result for each readable one, an error for the others."""

    results: dict[int, ImageResult]
    errors: dict[int, ImageError]
    frame: pb.SpikeFrame | None  # what carried the results to the edge (a stream: its steps); None: nothing went
    latency: Latency  # of the whole request

    def only(self) -> ImageResult:
        """The result of a request for one image; raises its ImageError if it could not be read."""
        if self.errors:
            raise self.errors[0]
        return self.results[0]


class SplitPipeline:
    def __init__(
        self, heads: Sequence[HeadRunner], edge: EdgeClient, settings: DeviceSettings, metrics: DeviceMetrics
    ) -> None:
        """``heads``: one per (backbone, split point), the default model's first."""
        self.edge = edge
        self.metrics = metrics
        self.settings = settings
        # Torch work runs on one thread, for every head: forwards take turns anyway (see HeadRunner).
        self.head_thread = HeadThread()
        self.decoder = Decoder(settings.max_decoded_bytes)
        self.models = ModelSet([ServedModel(head, self._queue(head), measure_costs(head)) for head in heads])
        self.link = LinkEstimator(settings.prior_link())
        self.channel = LossyChannel(settings.channel)
        self._last_auto: tuple[str, int] | None = None  # the (arch, split point) auto chose last
        self._open_streams = 0  # streamed requests in progress

    def _queue(self, head: HeadRunner) -> HeadQueue:
        return HeadQueue(
            head,
            self.head_thread,
            self.settings.batch_policy,
            self.settings.head_queue_limit,
            on_run=self.metrics.ran_head,
        )

    async def start(self) -> None:
        for model in self.models:
            model.queue.start()

    async def close(self) -> None:
        for model in self.models:
            await model.queue.stop()
        self.head_thread.close()
        self.decoder.close()

    async def classify(self, images: Sequence[bytes], options: ClassifyOptions, deadline: Deadline) -> Classified:
        """Each image's result, or the ImageError that says why it cannot be read. Raises UnknownModel /
        NoEligibleSplit for a model this device cannot run, HeadQueueFull / HeadTimeout when the head cannot take the
        images in time, and EdgeError when the edge returns no logits. A request that streams (``options.stream``,
        or an early exit; the settings' where the request does not say) classifies one image."""
        start = perf_counter()
        options = options.with_defaults(self.settings.stream, self.settings.early_exit)
        model, choice = await self.choose(options.arch, options.split_point, deadline)
        if options.stream:
            return await self._classify_streamed(model, images, options.early_exit, choice, deadline, start)
        return await self._classify_in_one_frame(model, images, choice, deadline, start)

    async def choose(
        self, arch: str | None, split_point: str | None, deadline: Deadline
    ) -> tuple[ServedModel, SplitChoice | None]:
        """The model a request runs, and how ``auto`` chose it; raises UnknownModel, planner.NoEligibleSplit, or
        EdgeModelMismatch when the edge serves none of the models ``auto`` could pick."""
        model = self.models.resolve(arch, split_point)
        if model is not None:
            return model, None
        if not self.models.edge_known():
            try:  # once: which models the edge serves, and its time for each; within the request's deadline
                await asyncio.wait_for(self.check_edge(), deadline.remaining())
            except (TimeoutError, EdgeError):
                pass  # the planner goes on what it knows; the request itself will meet the edge's state
        candidates = self.models.candidates(arch)
        if not candidates:
            raise EdgeModelMismatch(
                f"split_point=auto: the edge at {self.edge.address} serves none of this device's "
                f"heads ({self.models.served()})"
            )
        link = self.link.link()
        s = self.settings
        # an edge time not known yet counts as the slowest known: no model looks free for lack of a measurement
        slowest = max((c.costs.edge_ms for c in candidates if c.costs.edge_ms is not None), default=0.0)
        plan = planner.plan(
            [c.profile(slowest) for c in candidates], link, s.objective, s.max_accuracy_drop, s.latency_weight
        )
        chosen = plan.estimates.index(plan.choice)
        # Hysteresis: keep the previous choice while it scores within SWITCH_MARGIN of the best, so that the noise
        # in a link estimate does not flip auto back and forth between two close split points.
        previous = next((i for i, c in enumerate(candidates) if c.key == self._last_auto), None)
        if previous is not None and plan.estimates[previous].score <= (1 + SWITCH_MARGIN) * plan.choice.score:
            chosen = previous
        self._last_auto = candidates[chosen].key
        estimate = plan.estimates[chosen]
        choice = SplitChoice(
            objective=plan.objective.value,
            link=link.name,
            link_measured=self.link.measured,
            link_rate_mbps=link.rate_mbps,
            link_rtt_ms=link.rtt_ms,
            candidates=sum(e.eligible for e in plan.estimates),
            predicted_latency_ms=estimate.latency_ms,
            predicted_energy_mj=estimate.energy_mj,
        )
        return candidates[chosen], choice

    async def check_edge(self) -> pb.ModelInfo:
        """The edge's model info if it is reachable and serves at least one of the models' tails; raises EdgeError
        otherwise. Learns which it serves, and its time for each."""
        info = await self.edge.model_info()
        self.models.learn_edge(info)
        if not self.models.edge_serves_any():
            served = ", ".join(m.model_fingerprint for m in (list(info.models) or [info]))
            heads = ", ".join(f"{m.name} model {m.head.checkpoint.fingerprint}" for m in self.models)
            raise EdgeModelMismatch(
                f"edge at {self.edge.address} serves model(s) {served}, none of this device's heads ({heads})"
            )
        return info

    async def _classify_in_one_frame(
        self, model: ServedModel, images: Sequence[bytes], choice: SplitChoice | None, deadline: Deadline, start: float
    ) -> Classified:
        """The readable images through the model's queue as one job, to the edge in one frame [T, B, C', H', W']."""
        decoded = await self._decode(model, images, deadline, queued=True)
        if not decoded.inputs:  # nothing to run: no head, no frame
            return Classified({}, decoded.errors, None, Latency(device=decoded.ms, total=_ms_since(start)))
        job = await self._run_head(model, decoded.inputs, deadline)
        reply = await self._ask_edge(model, job.frame, deadline)  # checked: one row of logits per image of the frame
        latency = Latency(
            device=decoded.ms + job.timings.total_ms,
            queue=job.queue_ms,
            edge=reply.edge_ms,
            network=reply.round_trip_ms - reply.edge_ms,
            total=_ms_since(start),
        )
        checkpoint = model.head.checkpoint
        shares = WireShare.of_frame(job.frame, checkpoint.config.geometry().uncompressed_bytes)
        damage = LinkDamage.of(job.frame, reply.damage)
        radio = self.link.prior  # the configured radio: see Energy.transmit_mj
        results = {
            index: ImageResult(
                checkpoint,
                spikes,
                reply.logits[row],
                latency,
                shares[row],
                transmit_mj=radio.transmit_mj(shares[row].message_bytes),
                head_batch_images=job.run_images,
                edge_batch_images=reply.edge_batch_images,
                link_damage=damage,
                split_choice=choice,
                edge_replica=reply.served_by or None,
            )
            for row, (index, spikes) in enumerate(job.images.items())
        }  # the frame's rows, in the job's order
        return Classified(results, decoded.errors, job.frame, latency)

    async def _classify_streamed(
        self,
        model: ServedModel,
        images: Sequence[bytes],
        early_exit: float | None,
        choice: SplitChoice | None,
        deadline: Deadline,
        start: float,
    ) -> Classified:
        """One image through the model's head and the edge one time step per message."""
        if len(images) != 1:
            raise ValueError(f"a streamed request classifies one image, not {len(images)}")
        model.head.streaming_engine()  # StreamingUnsupported before any work, where the runtime cannot stream
        # Streams run their head steps on the head thread beside the queues' runs: at most as many open at once as
        # may wait for a head, so a burst of them is refused (503) rather than queued unbounded. This bounds their
        # decoding too: they never join a head's queue, and do not count against it.
        if self._open_streams >= self.settings.head_queue_limit:
            raise HeadQueueFull(
                f"{self._open_streams} streamed requests are open, the most this device takes "
                f"(head_queue_limit); retry later"
            )
        self._open_streams += 1
        try:
            decoded = await self._decode(model, images, deadline, queued=False)
            if decoded.errors:
                return Classified({}, decoded.errors, None, Latency(device=decoded.ms, total=_ms_since(start)))
            streamed = await stream_image(
                model.head, decoded.inputs[0], self.head_thread, self.edge, self.channel, deadline, early_exit
            )
        finally:
            self._open_streams -= 1
        # device and edge time overlap: each is its own sum, and no network figure is their difference
        latency = Latency(device=decoded.ms + streamed.device_ms, edge=streamed.edge_ms, total=_ms_since(start))
        frame = streamed.spikes.frame  # the steps sent, their payloads together
        checkpoint = model.head.checkpoint
        wire = WireShare(
            len(frame.payload),
            streamed.message_bytes,
            checkpoint.config.geometry().uncompressed_bytes / len(frame.payload),
        )
        result = ImageResult(
            checkpoint,
            streamed.spikes,
            streamed.logits,
            latency,
            wire,
            transmit_mj=self.link.prior.transmit_mj(streamed.message_bytes),
            link_damage=streamed.link_damage,
            split_choice=choice,
            steps=streamed.steps,
        )
        return Classified({0: result}, {}, frame, latency)

    async def _decode(self, model: ServedModel, images: Sequence[bytes], deadline: Deadline, queued: bool) -> Decoded:
        """The images as the model's inputs, or why each cannot be one; raises HeadTimeout at the deadline.

        ``queued``: the request will join the model's queue, and counts against its limit while decoding (raises
        HeadQueueFull at once when that queue is full, before decoding anything)."""
        with model.queue.on_its_way() if queued else nullcontext():
            decoded = await self.decoder.decode(list(images), model.head.checkpoint.config, deadline)
        self.metrics.observe_decode(decoded.ms)
        return decoded

    async def _run_head(self, model: ServedModel, images: dict[int, ModelInput], deadline: Deadline) -> JobResult:
        """The images through the model's head (batched with other requests'), one frame for them; raises
        HeadQueueFull or HeadTimeout."""
        self.metrics.head_queue.set(model.queue.queued)
        job = await model.queue.submit(images, deadline)
        self.metrics.observe_head(job)
        model.costs.observe_head(job)
        return job

    async def _ask_edge(self, model: ServedModel, frame: pb.SpikeFrame, deadline: Deadline) -> EdgeReply:
        """The frame's logits from the edge; raises an EdgeError subclass."""
        frame = await self.channel.deliver(frame)
        reply = await self.edge.infer(frame, model.head.checkpoint.config.backbone.num_classes, deadline)
        self.metrics.observe_edge(reply)
        self.link.observe(frame.ByteSize(), reply.round_trip_ms - reply.edge_ms)
        if frame.shape[1] == 1:  # what one image waits for at the edge; a batch's figure is not per image
            model.costs.observe_edge(reply.edge_ms)
        return reply


def _ms_since(start: float) -> float:
    return (perf_counter() - start) * 1e3
