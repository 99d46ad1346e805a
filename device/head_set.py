"""The heads one device holds, one per (backbone, split point), and which one a request runs.

    ?split_point=K [&arch=A]   that head (arch: the default model's when not given)
    ?split_point=auto [&arch]  the planner's choice (device/planner.py) for the link as measured now,
                               among the heads whose tail the edge serves
    neither                    the default model (the first checkpoint)

Each head keeps running estimates of what it costs on this device (compute time, energy from its
measured spikes, bytes on the wire), seeded by a start-up measurement and then moved by every
request it runs; the edge's time per model comes from the edge itself (GetModelInfo), then from its
replies. Those, the checkpoint's recorded accuracy drop and the link estimate are the planner's inputs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter

import torch

from shared.codec import raw_length
from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb

from .head_batcher import HeadBatcher
from .head_runner import HeadRunner
from .planner import SplitProfile

AUTO = "auto"
SPLIT_POINT_HELP = ("k: the split point to run (a head this device holds), or auto: the planner's choice for the "
                    "link as measured; default: the default model's")
ARCH_HELP = "the backbone of split_point, e.g. spiking_resnet50 (default: the default model's)"
SMOOTHING = 0.2  # weight of the newest request in a running estimate


class UnknownModel(ValueError):
    """A request for a backbone or split point this device holds no head for (422)."""


def smoothed(previous: float | None, sample: float) -> float:
    """An exponentially weighted running mean; the first sample starts it."""
    return sample if previous is None else (1 - SMOOTHING) * previous + SMOOTHING * sample


@dataclass
class HeadCosts:
    """Running estimates of one head's cost per image on this device and on the edge."""

    device_ms: float
    device_mj: float
    message_bytes: float
    edge_ms: float | None = None  # None until the edge has said or answered

    def observe_head(self, device_ms: float, device_mj: float, message_bytes: float) -> None:
        self.device_ms = smoothed(self.device_ms, device_ms)
        self.device_mj = smoothed(self.device_mj, device_mj)
        self.message_bytes = smoothed(self.message_bytes, message_bytes)

    def observe_edge(self, edge_ms: float) -> None:
        self.edge_ms = smoothed(self.edge_ms, edge_ms)


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

    def profile(self) -> SplitProfile:
        checkpoint = self.runner.checkpoint
        # points lost against the backbone (training/recipes.py); unverified info is not trusted
        drop = checkpoint.info.get("accuracy_drop") if checkpoint.info_verified else None
        return SplitProfile(self.key[0], self.key[1], self.runner.split_point.name, self.costs.device_ms,
                            self.costs.device_mj, round(self.costs.message_bytes), self.costs.edge_ms or 0.0,
                            None if drop is None else float(drop))


def measure_costs(runner: HeadRunner, runs: int = 5) -> HeadCosts:
    """Start-up estimates: the median of ``runs`` forwards of a seeded image-shaped input (after the warm-up),
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
    return HeadCosts(statistics.median(times), energy, message_bytes)


class HeadSet:
    def __init__(self, heads: Sequence[ServedHead]) -> None:
        """``heads``: the default model's first; one per (backbone, split point)."""
        self.heads = {head.key: head for head in heads}
        if len(self.heads) < len(heads):
            raise ValueError("two checkpoints for the same backbone and split point: a device holds one head for "
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
                head.costs.edge_ms = model.inference_ms
