"""SpikeBottleNet: a spiking backbone split by a spiking bottleneck into a device head and an edge tail.

    device:  image [B, 3, H, W] -> stem -> blocks 1..k -> encoder -> spikes [T, B, C', H', W']   (head)
    network: the spikes, bit-packed
    edge:    spikes -> decoder -> blocks k+1..n -> classifier -> logits [B, K]                 (tail)

Any registered backbone (shared/backbones) splits the same way: its config lists the split points
and builds stem, blocks and classifier; head and tail slice its block sequence at k.
``SpikeBottleNet`` holds both halves as submodules ``head`` and ``tail``, so ``model.head(x)`` and
``model.tail(spikes)`` are the two seams. Each half is also a model of its own (``SplitHead``,
``SplitTail``) that can be built and loaded without the other: the edge never builds the head and
the device never builds the tail.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch
from torch import nn

from .backbones import (
    BackboneConfig,
    BlockSequence,
    SpikingBackbone,
    SpikingResNetConfig,
    SplitPoint,
    backbone_config_from_dict,
)
from .bottleneck import BottleneckConfig, SpikeDecoder, SpikeEncoder, SplitPreset, spike_shape
from .codec import raw_length
from .entropy_codec import SpikeContextModel
from .errors import ConfigError
from .neuron import StepState, stepping
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


class SplitHead(nn.Module):
    """Device half: stem, blocks 1..k and the spike encoder."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        point = config.split_point
        self.config, self.time_steps = config, config.time_steps
        self.stem = config.backbone.stem()
        self.blocks = BlockSequence(config.backbone, 1, point.index)
        self.encoder = SpikeEncoder(point.channels, config.require_bottleneck(), config.backbone.lif)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # image: normalized [B, 3, H, W] -> binary spikes [T, B, C', H', W']
        return self.encoder(self.blocks(self.stem(image, self.time_steps)))

    def step(self, image: torch.Tensor, state: StepState) -> torch.Tensor:
        """The next time step's spikes [1, B, C', H', W'] for the image [B, 3, H, W] (direct encoding: the same
        image at every step), continuing from ``state``; the T-th call's spikes are step T-1 of ``forward``'s."""
        with stepping(self, state):
            return self.encoder(self.blocks(self.stem(image, 1)))


class SplitTail(nn.Module):
    """Edge half: spike decoder, blocks k+1..n and the classifier."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        point = config.split_point
        self.config = config
        self.decoder = SpikeDecoder(point.channels, config.require_bottleneck(), config.backbone.lif)
        self.blocks = BlockSequence(config.backbone, point.index + 1, len(config.backbone.split_points()))
        self.classifier = config.backbone.classifier()

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        # spikes: [T, B, C', H', W'] -> logits [B, num_classes]
        return self.classifier(self.blocks(self.decoder(spikes)))

    def step(self, spikes: torch.Tensor, state: StepState) -> torch.Tensor:
        """The running logits [B, num_classes] after the next time step's spikes [1, B, C', H', W'], continuing
        from ``state``: those of the mean over the steps so far, after T steps ``forward``'s logits."""
        with stepping(self, state):
            return self(spikes)


class SpikeBottleNet(nn.Module):
    """The split model run monolithically: forward(x) == tail(head(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.head = SplitHead(config)
        self.tail = SplitTail(config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(image))

    def load_backbone(self, backbone: SpikingBackbone) -> None:
        """Start from pre-trained backbone weights (step 2 of the paper's training).

        Head and tail reuse the backbone's parameter names (stem.*, blocks.<split point>.*,
        classifier.*), so each backbone tensor lands in whichever half holds that layer; only the
        new encoder and decoder keep their initialization.
        """
        if backbone.config != self.config.backbone:
            raise ConfigError(
                f"the pre-trained backbone is {backbone.config.arch} {backbone.config}, this split "
                f"model's is {self.config.backbone}"
            )
        state = backbone.state_dict()
        for half in (self.head, self.tail):
            own = half.state_dict()
            half.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


PARTS = ("head", "tail")


@overload
def build_model(config: ModelConfig, part: Literal["full"] = "full") -> SpikeBottleNet | SpikingBackbone: ...
@overload
def build_model(config: ModelConfig, part: Literal["head"]) -> SplitHead: ...
@overload
def build_model(config: ModelConfig, part: Literal["tail"]) -> SplitTail: ...
def build_model(config: ModelConfig, part: str = "full") -> nn.Module:
    """The module for one part of a checkpoint: "full" (a SpikeBottleNet, or a SpikingBackbone for a config without
    a bottleneck), or "head" / "tail" of a split model."""
    if part == "full":
        return SpikeBottleNet(config) if config.bottleneck else SpikingBackbone(config.backbone, config.time_steps)
    if part == "head":
        return SplitHead(config)
    if part == "tail":
        return SplitTail(config)
    raise ValueError(f"unknown model part {part!r}; expected 'full', 'head' or 'tail'")
