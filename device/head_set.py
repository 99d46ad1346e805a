"""The heads one device holds, one per (backbone, split point), and which one a request runs.

    ?split_point=K [&arch=A]   that head (arch: the default model's when not given)
    ?split_point=auto [&arch]  the planner's choice (device/planner.py) for the link as measured now,
                               among the heads whose tail the edge serves
    neither                    the default model (the first checkpoint)

Each head keeps running estimates of what it costs on this device (compute time, energy from its
measured spikes, bytes on the wire): the median of its last 16 requests, seeded by a start-up
measurement; the edge's time per model comes from the edge itself (GetModelInfo), then from its
replies. Those, the checkpoint's recorded accuracy drop and the link estimate are the planner's inputs.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter

import torch

from spikebottlenet.shared.codec import raw_length
from spikebottlenet.shared.errors import ConfigError, SpikeBottleNetError
from spikebottlenet.v1 import split_inference_pb2 as pb

from .head_batcher import HeadBatcher
from .head_runner import HeadRunner
from .planner import SplitProfile

AUTO = "auto"
SPLIT_POINT_HELP = ("k: the split point to run (a head this device holds), or auto: the planner's choice for the "
                    "link as measured; default: the default model's")
ARCH_HELP = "the backbone of split_point, e.g. spiking_resnet50 (default: the default model's)"
WINDOW = 16  # requests a running estimate is the median of


class UnknownModel(SpikeBottleNetError, ValueError):
    """A request for a backbone or split point this device holds no head for (422)."""


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


class HeadCosts:
    """Running estimates of one head's cost per image on this device and on the edge, from a start-up measurement
    and then the requests it runs."""

    def __init__(self, device_ms: float, device_mj: float, message_bytes: float) -> None:
        self._device_ms, self._device_mj = RunningMedian(device_ms), RunningMedian(device_mj)
        self._message_bytes, self._edge_ms = RunningMedian(message_bytes), RunningMedian()

    device_ms = property(lambda self: self._device_ms.value)
    device_mj = property(lambda self: self._device_mj.value)
    message_bytes = property(lambda self: self._message_bytes.value)
    edge_ms = property(lambda self: self._edge_ms.value, doc="None until the edge has said or answered")

    def observe_head(self, device_ms: float, device_mj: float, message_bytes: float) -> None:
        self._device_ms.add(device_ms)
        self._device_mj.add(device_mj)
        self._message_bytes.add(message_bytes)

    def observe_edge(self, edge_ms: float) -> None:
        self._edge_ms.add(edge_ms)


@dataclass
class ServedHead:
    runner: HeadRunner
    batcher: HeadBatcher
    costs: HeadCosts
    edge_serves: bool | None = field(default=None)  # None: not known yet (the edge not asked)

    @property
    def key(self) -> tuple[str, int]:
        return self.runner.checkpoint.config.backbone.arch, self.runner.split_point.index

    @property
    def name(self) -> str:
        return f"{self.key[0]} {self.runner.split_point.name}"

    def profile(self, unknown_edge_ms: float = 0.0) -> SplitProfile:
        """The planner's view of this head; ``unknown_edge_ms`` stands in for an edge time not known yet."""
        checkpoint = self.runner.checkpoint
        # points lost against the backbone (training/recipes.py); unverified info is not trusted
        drop = checkpoint.info.accuracy_drop if checkpoint.info_verified else None
        return SplitProfile(self.key[0], self.key[1], self.runner.split_point.name, self.costs.device_ms,
                            self.costs.device_mj, round(self.costs.message_bytes),
                            unknown_edge_ms if self.costs.edge_ms is None else self.costs.edge_ms,
                            None if drop is None else float(drop))


def measure_costs(runner: HeadRunner, runs: int = 5) -> HeadCosts:
    """Start-up estimates: the fastest of ``runs`` forwards of a seeded image-shaped input (after the warm-up: the
    fastest, as a start-up shares the machine with whatever else is starting),
    its energy, and its frame's size with a raw payload: a noise input says nothing about how well real spikes
    compress, so the bytes start at the most the frame can take. Requests then move them
    (HeadCosts.observe_head)."""
    size = runner.checkpoint.config.backbone.image_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))  # [1, 3, H, W], normalized
    times, energy, message_bytes = [], 0.0, 0
    for _ in range(runs):
        start = perf_counter()
        spikes, estimates = runner.forward(x)
        _, frame = runner.pack(spikes)
        times.append((perf_counter() - start) * 1e3)
        energy = estimates[0].device_45nm_mj
        message_bytes = frame.ByteSize() - len(frame.payload) + raw_length(tuple(spikes.shape))
    return HeadCosts(min(times), energy, message_bytes)


class HeadSet:
    def __init__(self, heads: Sequence[ServedHead]) -> None:
        """``heads``: the default model's first; one per (backbone, split point)."""
        self.heads = {head.key: head for head in heads}
        if len(self.heads) < len(heads):
            raise ConfigError("two checkpoints for the same backbone and split point: a device holds one head for "
                              "each")
        self.default = heads[0]

    def served(self) -> str:
        """The list a 422 gives: what this device holds."""
        return ", ".join(f"{arch} split_point={k} ({head.runner.split_point.name})"
                         for (arch, k), head in self.heads.items())

    def resolve(self, arch: str | None, split_point: str | None) -> ServedHead | None:
        """The head a request asks for; None for ``auto`` (the planner decides). Raises UnknownModel."""
        if split_point is None:
            if arch is None or arch == self.default.key[0]:
                return self.default
            raise UnknownModel(f"arch={arch} needs a split_point (a number, or auto); this device holds "
                               f"{self.served()}")
        archs = {key[0] for key in self.heads}
        if arch is not None and arch not in archs:
            raise UnknownModel(f"this device holds no {arch} head; it holds {self.served()}")
        if split_point == AUTO:
            return None
        try:
            index = int(split_point)
        except ValueError:
            raise UnknownModel(f"split_point must be a number or auto, got {split_point!r}; this device holds "
                               f"{self.served()}") from None
        head = self.heads.get((arch or self.default.key[0], index))
        if head is None:
            raise UnknownModel(f"this device holds no head for {arch or self.default.key[0]} at split point "
                               f"{index}; it holds {self.served()}")
        return head

    def candidates(self, arch: str | None) -> list[ServedHead]:
        """The heads ``auto`` may pick: of ``arch`` (any when None), and not known to lack a tail on the edge."""
        return [head for head in self.heads.values()
                if (arch is None or head.key[0] == arch) and head.edge_serves is not False]

    def learn_edge(self, info: pb.ModelInfo) -> None:
        """Which heads the edge serves, and its time per image for each, from its GetModelInfo."""
        models = list(info.models) or [info]  # an edge that predates the list describes its one model
        served = {model.model_fingerprint: model for model in models}
        for head in self.heads.values():
            model = served.get(head.runner.checkpoint.fingerprint)
            head.edge_serves = model is not None
            if model is not None and head.costs.edge_ms is None and model.inference_ms > 0:
                head.costs.observe_edge(model.inference_ms)
