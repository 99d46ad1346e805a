"""The models one device serves, one per (backbone, split point), and which one a request runs.

A model here is a split model as the device holds it (a ServedModel): its head (HeadRunner), the queue in
front of that head, its running costs, and whether the edge serves its tail.

    ?split_point=K [&arch=A]   that model (arch: the default model's when not given)
    ?split_point=auto [&arch]  the planner's choice (device/planner.py) for the link as measured now,
                               among the models whose tail the edge serves
    neither                    the default model (the first checkpoint)

Each model keeps running estimates of what it costs on this device (compute time, energy from its
measured spikes, bytes on the wire): the median of its last 16 requests, seeded by a start-up
measurement; the edge's time per model comes from the edge itself (GetModelInfo), then from its
replies. Those, the checkpoint's recorded accuracy drop and the link estimate are the planner's inputs.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np

from spikebottlenet.shared.codec import raw_length
from spikebottlenet.shared.errors import ConfigError, SpikeBottleNetError
from spikebottlenet.v1 import split_inference_pb2 as pb

from .head_queue import HeadQueue
from .head_runner import HeadRunner, JobResult
from .planner import SplitProfile

AUTO = "auto"
SPLIT_POINT_HELP = (
    "k: the split point to run (a head this device holds), or auto: the planner's choice for the "
    "link as measured; default: the default model's"
)
ARCH_HELP = "the backbone of split_point, e.g. spiking_resnet50 (default: the default model's)"
WINDOW = 16  # requests a running estimate is the median of


class UnknownModel(SpikeBottleNetError, ValueError):
    """A request for a backbone or split point this device holds no model for (422)."""


class RunningMedian:
    """The median of the last WINDOW samples: one slow request (a collection, a scheduler hiccup) moves it little,
    and it follows a lasting change within WINDOW / 2 requests."""

    def __init__(self, first: float | None = None) -> None:
        self._samples: deque[float] = deque([] if first is None else [first], maxlen=WINDOW)

    def add(self, sample: float) -> None:
        self._samples.append(sample)

    @property
    def value(self) -> float | None:
        return statistics.median(self._samples) if self._samples else None


class ModelCosts:
    """Running estimates of one model's cost per image: its head's on this device and its tail's on the edge, from a
    start-up measurement and then the requests it runs."""

    def __init__(self, device_ms: float, device_mj: float, message_bytes: float) -> None:
        self._device_ms, self._device_mj = RunningMedian(device_ms), RunningMedian(device_mj)
        self._message_bytes, self._edge_ms = RunningMedian(message_bytes), RunningMedian()

    device_ms = property(lambda self: self._device_ms.value)
    device_mj = property(lambda self: self._device_mj.value)
    message_bytes = property(lambda self: self._message_bytes.value)
    edge_ms = property(lambda self: self._edge_ms.value, doc="None until the edge has said or answered")

    def observe_head(self, job: JobResult) -> None:
        """One head run's figures per image of ``job``: compute only, as measured at start-up (decoding and
        preprocessing an upload cost every head the same), the job's images' energy, their frame's bytes."""
        images = len(job.images)
        self._device_ms.add((job.timings.head_ms + job.timings.encode_ms) / job.run_images)
        self._device_mj.add(sum(image.energy.device_45nm_mj for image in job.images.values()) / images)
        self._message_bytes.add(job.frame.ByteSize() / images)

    def observe_edge(self, edge_ms: float) -> None:
        self._edge_ms.add(edge_ms)


@dataclass
class ServedModel:
    """One split model this device serves: its head, the queue in front of it, what it costs, and whether the edge
    serves its tail."""

    head: HeadRunner
    queue: HeadQueue
    costs: ModelCosts
    edge_serves: bool | None = field(default=None)  # None: not known yet (the edge not asked)

    @property
    def key(self) -> tuple[str, int]:
        """(arch, split point index): what a request names it by."""
        return self.head.checkpoint.config.backbone.arch, self.head.split_point.index

    @property
    def name(self) -> str:
        return f"{self.key[0]} {self.head.split_point.name}"

    def profile(self, unknown_edge_ms: float = 0.0) -> SplitProfile:
        """The planner's view of this model; ``unknown_edge_ms`` stands in for an edge time not known yet."""
        checkpoint = self.head.checkpoint
        # points lost against the backbone (training/recipes.py); unverified info is not trusted
        drop = checkpoint.info.accuracy_drop if checkpoint.info_verified else None
        return SplitProfile(
            self.key[0],
            self.key[1],
            self.head.split_point.name,
            self.costs.device_ms,
            self.costs.device_mj,
            round(self.costs.message_bytes),
            unknown_edge_ms if self.costs.edge_ms is None else self.costs.edge_ms,
            None if drop is None else float(drop),
        )


def measure_costs(head: HeadRunner, runs: int = 5) -> ModelCosts:
    """Start-up estimates: the fastest of ``runs`` forwards of a seeded image-shaped input (after the warm-up: the
    fastest, as a start-up shares the machine with whatever else is starting),
    its energy, and its frame's size with a raw payload: a noise input says nothing about how well real spikes
    compress, so the bytes start at the most the frame can take. Requests then move them
    (ModelCosts.observe_head)."""
    size = head.checkpoint.config.backbone.image_size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), np.float32)  # [1, 3, H, W], normalized
    times, energy, message_bytes = [], 0.0, 0
    for _ in range(runs):
        start = perf_counter()
        spikes, estimates = head.engine.forward(x)
        _, frame = head.pack(spikes)
        times.append((perf_counter() - start) * 1e3)
        energy = estimates[0].device_45nm_mj
        message_bytes = frame.ByteSize() - len(frame.payload) + raw_length(tuple(spikes.shape))
    return ModelCosts(min(times), energy, message_bytes)


class ModelSet:
    """The models one device serves, by (arch, split point index); iterating gives them the default first."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        """``models``: the default model first; one per (backbone, split point)."""
        self._models = {model.key: model for model in models}
        if len(self._models) < len(models):
            raise ConfigError("two checkpoints for the same backbone and split point: a device holds one head for each")
        self.default = models[0]

    def __iter__(self) -> Iterator[ServedModel]:
        """Every model, the default first."""
        return iter(self._models.values())

    def served(self) -> str:
        """The list a 422 gives: what this device holds."""
        return ", ".join(
            f"{arch} split_point={k} ({model.head.split_point.name})" for (arch, k), model in self._models.items()
        )

    def resolve(self, arch: str | None, split_point: str | None) -> ServedModel | None:
        """The model a request asks for; None for ``auto`` (the planner decides). Raises UnknownModel."""
        if split_point is None:
            if arch is None or arch == self.default.key[0]:
                return self.default
            raise UnknownModel(
                f"arch={arch} needs a split_point (a number, or auto); this device holds {self.served()}"
            )
        archs = {key[0] for key in self._models}
        if arch is not None and arch not in archs:
            raise UnknownModel(f"this device holds no {arch} head; it holds {self.served()}")
        if split_point == AUTO:
            return None
        try:
            index = int(split_point)
        except ValueError:
            raise UnknownModel(
                f"split_point must be a number or auto, got {split_point!r}; this device holds {self.served()}"
            ) from None
        model = self._models.get((arch or self.default.key[0], index))
        if model is None:
            raise UnknownModel(
                f"this device holds no head for {arch or self.default.key[0]} at split point "
                f"{index}; it holds {self.served()}"
            )
        return model

    def candidates(self, arch: str | None) -> list[ServedModel]:
        """The models ``auto`` may pick: of ``arch`` (any when None), and not known to lack a tail on the edge."""
        return [model for model in self if (arch is None or model.key[0] == arch) and model.edge_serves is not False]

    def learn_edge(self, info: pb.ModelInfo) -> None:
        """Which models' tails the edge serves, and its time per image for each, from its GetModelInfo."""
        tails = list(info.models) or [info]  # an edge that predates the list describes its one model
        served = {tail.model_fingerprint: tail for tail in tails}
        for model in self:
            tail = served.get(model.head.checkpoint.fingerprint)
            model.edge_serves = tail is not None
            if tail is not None and model.costs.edge_ms is None and tail.inference_ms > 0:
                model.costs.observe_edge(tail.inference_ms)

    def edge_serves_any(self) -> bool:
        return any(model.edge_serves for model in self)

    def edge_known(self) -> bool:
        """Whether the edge has said which of these models it serves."""
        return all(model.edge_serves is not None for model in self)
