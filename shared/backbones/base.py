"""What every spiking backbone provides: its config, split points and builders.

A backbone is described by its config (a frozen dataclass, stored in every checkpoint). Like timm's
``feature_info``, the config lists the backbone's split points: the outputs of its blocks, in order,
each a binary spike tensor [T, B, C, H, W]. The config also builds the backbone's parts:

    stem()          image [B, 3, H, W] -> spikes [T, B, C0, H, W]   (direct encoding)
    block(i)        spikes -> spikes: the block whose output is split point i (1-based)
    classifier()    spikes of the last block -> logits [B, num_classes]

and knows the paper's bottleneck for each split point (``bottleneck_preset``). Everything else
(the split model's head and tail, the energy report, training, the services) asks the config and
never counts blocks itself: head = stem + blocks[:k] + encoder, tail = decoder + blocks[k:] +
classifier, sliced by ``BlockSequence`` (spiking_backbone.py) from the same description.

This module does not import torch: a process without it (the ONNX device) reads checkpoint configs and
their geometry; only the builders import the torch modules, when called.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError
from ..lif_config import LIFConfig

if TYPE_CHECKING:
    from torch import nn

    from ..bottleneck import SplitPreset


@dataclass(frozen=True)
class SplitPoint:
    """One block output where the network may be split (timm's feature_info, per block)."""

    index: int  # 1-based position in the block sequence: the ``k`` of ``--split-point k``
    name: str  # "RB8", "IRB11": what tables, logs and responses call it
    channels: int  # C of the block's output spikes
    height: int  # H
    width: int  # W

    @property
    def key(self) -> str:
        """The block's module name ("rb8"): head, tail and whole backbone share parameter names."""
        return self.name.lower()


@dataclass(frozen=True)
class BackboneConfig(ABC):
    """Fields every backbone has; subclasses add their own and implement the builders."""

    arch: str
    width_multiplier: float = 1.0  # scales every channel count; narrow variants keep all blocks
    num_classes: int = 100
    image_size: int = 32
    lif: LIFConfig = dataclasses.field(default_factory=LIFConfig)
    # channel counts scaled below full width are rounded to multiples of this (torchvision's
    # _make_divisible); 1 rounds to the nearest count, as every checkpoint written before the field did
    channel_divisor: int = 1

    ARCH: ClassVar[str]  # the registry name, which ``arch`` must equal
    ALIASES: ClassVar[tuple[str, ...]] = ()  # short names accepted on the command line

    def __post_init__(self) -> None:
        if self.arch != self.ARCH:
            raise ConfigError(f"{type(self).__name__} is {self.ARCH!r}, not {self.arch!r}")
        if self.width_multiplier <= 0 or self.num_classes < 1 or self.channel_divisor < 1:
            raise ConfigError("width_multiplier must be > 0, num_classes and channel_divisor >= 1")

    def scaled(self, channels: int) -> int:
        """A full-width channel count at this width: a multiple of ``channel_divisor``, at least one of it,
        and never below 90 % of the exact count (torchvision's _make_divisible); with divisor 1, the
        nearest count, at least one."""
        exact, divisor = channels * self.width_multiplier, self.channel_divisor
        if divisor == 1:
            return max(1, round(exact))  # Python's round, half to even: as every such checkpoint was built
        rounded = max(divisor, int(exact + divisor / 2) // divisor * divisor)
        return rounded + divisor if rounded < 0.9 * exact else rounded

    @abstractmethod
    def split_points(self) -> tuple[SplitPoint, ...]:
        """Every block output, in order; the last one feeds the classifier."""

    @abstractmethod
    def stem(self) -> nn.Module:
        """image [B, 3, H, W], time_steps -> spikes [T, B, C, H, W]."""

    @abstractmethod
    def block(self, index: int) -> nn.Module:
        """The block producing split point ``index`` (1-based); spikes in, spikes out."""

    @abstractmethod
    def classifier(self) -> nn.Module:
        """Spikes of the last block [T, B, C, H, W] -> logits [B, num_classes]."""

    @abstractmethod
    def bottleneck_preset(self, index: int) -> SplitPreset:
        """The paper's bottleneck (C', stride, T) at split point ``index`` (see shared/bottleneck.py)."""

    def bottlenetpp_bytes(self, index: int) -> int | None:
        """BottleNet++'s bytes per image at split point ``index`` as the paper reports them (its ANN
        baseline), where the paper has a figure for this very model; None elsewhere."""
        return None

    def split_point(self, index: int) -> SplitPoint:
        """Split point ``index``; a ValueError naming the valid range if there is none."""
        points = self.split_points()
        if not 1 <= index <= len(points):
            raise ConfigError(
                f"{self.arch} has no split point {index}: it has {len(points)}, "
                f"{points[0].name} (1) .. {points[-1].name} ({len(points)})"
            )
        return points[index - 1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        """Inverse of ``to_dict``: JSON lists back to tuples, the LIF parameters back to LIFConfig."""

        def tuples(value: Any) -> Any:
            return tuple(tuples(v) for v in value) if isinstance(value, list) else value

        fields = {k: tuples(v) for k, v in d.items()}
        fields.setdefault("channel_divisor", 1)  # stored before the field: channels rounded to the nearest count
        return cls(**{**fields, "lif": LIFConfig(**d["lif"])})
