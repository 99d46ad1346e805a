"""What a split model is, as every checkpoint stores it: backbone, bottleneck, T, input and codec.

``ModelConfig`` rebuilds the model (shared/split_model.py ``build_model``) and tells, from the config
alone, what crosses the network (``geometry``). It imports no torch, so a process without it (the ONNX
device) reads a checkpoint's config and geometry as the torch processes do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .backbones import BackboneConfig, SpikingResNetConfig, SplitPoint, backbone_config_from_dict
from .bottleneck import BottleneckConfig, SplitPreset, spike_shape
from .codec import raw_length
from .entropy_codec import SpikeContextModel
from .errors import ConfigError
from .preprocess import INPUT_STYLES

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class SplitGeometry:
    """What crosses the network per image at a split, from the config alone."""

    point: SplitPoint  # where the bottleneck sits
    spike_shape: tuple[int, ...]  # (T, C', H', W') transmitted
    transmitted_bytes: int  # ceil(T*C'*H'*W' / 8): the raw codec's payload
    uncompressed_bytes: int  # ceil(T*C*H*W / 8): the block's own output spikes, what an unsplit model would send
    float32_feature_bytes: int  # C*H*W*4: what an ANN split after the same block would send

    @property
    def compression(self) -> float:
        return self.uncompressed_bytes / self.transmitted_bytes


def _rows(table: list[list[float]] | None) -> tuple[tuple[float, ...], ...] | None:
    """A table read back from JSON (lists) as the config holds it (tuples: immutable, as the config is)."""
    return None if table is None else tuple(tuple(row) for row in table)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and prepare its input; stored in every checkpoint."""

    backbone: BackboneConfig = field(default_factory=SpikingResNetConfig)
    bottleneck: BottleneckConfig | None = None  # None: the plain backbone (pre-training)
    time_steps: int = 4  # T: the image is repeated T times
    mean: tuple[float, ...] = CIFAR100_MEAN  # input normalization, per RGB channel
    std: tuple[float, ...] = CIFAR100_STD
    labels: tuple[str, ...] = ()  # class names, index = class id; empty: "class <i>"
    # how an upload becomes model input (shared/preprocess.py): "natural" resizes, "digits" frames the ink
    input_style: str = "natural"
    # the entropy codec's context model, C' rows of P(spike) per context (shared/entropy_codec.py), fitted
    # on training data by `sbn train fit-codec`; None: the model offers only the raw and sparse codecs
    entropy_model: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.input_style not in INPUT_STYLES:
            raise ConfigError(f"unknown input style {self.input_style!r}; expected one of {', '.join(INPUT_STYLES)}")
        if self.time_steps < 1:
            raise ConfigError(f"time_steps must be >= 1, got {self.time_steps}")
        if self.labels and len(self.labels) != self.backbone.num_classes:
            raise ConfigError(f"{len(self.labels)} labels for {self.backbone.num_classes} classes")
        if self.bottleneck:
            _ = self.spike_shape  # validates the bottleneck against the backbone's split points
        if self.entropy_model is not None:
            model = SpikeContextModel.from_config(self.entropy_model)  # ValueError for a malformed table
            if self.bottleneck is None or model.channels != self.bottleneck.channels:
                raise ConfigError(
                    f"the entropy model has {model.channels} channels; the bottleneck sends "
                    f"{self.bottleneck.channels if self.bottleneck else 'no'} channels"
                )

    def spike_model(self) -> SpikeContextModel | None:
        """The entropy codec's model of this model's transmitted spikes, if fitted."""
        return None if self.entropy_model is None else SpikeContextModel.from_config(self.entropy_model)

    def with_split(self, preset: SplitPreset) -> ModelConfig:
        return dataclasses.replace(self, bottleneck=preset.bottleneck, time_steps=preset.time_steps)

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else f"class {index}"

    @property
    def split_point(self) -> SplitPoint:
        """The split point the bottleneck follows."""
        return self.backbone.split_point(self.require_bottleneck().split_point)

    @property
    def spike_shape(self) -> tuple[int, ...]:
        """(T, C', H', W') of one image's transmitted spikes."""
        return spike_shape(self.split_point, self.require_bottleneck(), self.time_steps)

    def geometry(self) -> SplitGeometry:
        point = self.split_point
        return SplitGeometry(
            point=point,
            spike_shape=self.spike_shape,
            transmitted_bytes=raw_length(self.spike_shape),
            uncompressed_bytes=raw_length((self.time_steps, point.channels, point.height, point.width)),
            float32_feature_bytes=point.channels * point.height * point.width * 4,
        )

    def require_bottleneck(self) -> BottleneckConfig:
        """The bottleneck of a split model; ConfigError for a backbone's config, which has none."""
        if self.bottleneck is None:
            raise ConfigError("this model has no bottleneck (it is a backbone checkpoint), so it cannot be split")
        return self.bottleneck

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        bottleneck = BottleneckConfig(**d["bottleneck"]) if d.get("bottleneck") else None
        return cls(
            backbone=backbone_config_from_dict(d["backbone"]),
            bottleneck=bottleneck,
            time_steps=int(d["time_steps"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            labels=tuple(d.get("labels", ())),
            input_style=d.get("input_style", "natural"),  # checkpoints written before input styles
            entropy_model=_rows(d.get("entropy_model")),  # ... and before the entropy codec
        )
