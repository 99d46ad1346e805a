"""SpikeBottleNet: the spiking ResNet split by a spiking bottleneck into a device head and an edge tail.

    device:  image [B, 3, H, W] -> stem -> RB1..RBk -> encoder -> spikes [T, B, C', H', W']   (head)
    network: the spikes, bit-packed
    edge:    spikes -> decoder -> RBk+1..RB16 -> classifier -> logits [B, K]                (tail)

``SpikeBottleNet`` holds both halves as submodules ``head`` and ``tail``, so ``model.head(x)`` and
``model.tail(spikes)`` are the two seams and ``model(x) == model.tail(model.head(x))``. Each half
is also a model of its own (``SplitHead``, ``SplitTail``) that can be built and loaded without the
other: the edge never builds the head and the device never builds the tail.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .bottleneck import BottleneckConfig, SpikeDecoder, SpikeEncoder, SplitPreset, spike_shape
from .layers import DirectEncodingStem
from .neuron import LIFConfig
from .spiking_resnet import NUM_BLOCKS, SpikeRateClassifier, SpikingResNet, SpikingResNetConfig, block_specs, build_blocks

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and prepare its input; stored in every checkpoint."""

    backbone: SpikingResNetConfig = field(default_factory=SpikingResNetConfig)
    bottleneck: BottleneckConfig | None = None  # None: the plain backbone (pre-training)
    time_steps: int = 4  # T: the image is repeated T times
    mean: tuple[float, ...] = CIFAR100_MEAN  # input normalization, per RGB channel
    std: tuple[float, ...] = CIFAR100_STD
    labels: tuple[str, ...] = ()  # class names, index = class id; empty: "class <i>"

    def __post_init__(self) -> None:
        if self.time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {self.time_steps}")
        if self.labels and len(self.labels) != self.backbone.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {self.backbone.num_classes} classes")
        if self.bottleneck:
            self.spike_shape  # validates the bottleneck against the block geometry

    def with_split(self, preset: SplitPreset) -> ModelConfig:
        return dataclasses.replace(self, bottleneck=preset.bottleneck, time_steps=preset.time_steps)

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else f"class {index}"

    @property
    def spike_shape(self) -> tuple[int, ...]:
        """(T, C', H', W') of one image's transmitted spikes."""
        return spike_shape(self.backbone, self._require_split(), self.time_steps)

    def _require_split(self) -> BottleneckConfig:
        if self.bottleneck is None:
            raise ValueError("this model has no bottleneck (it is a backbone checkpoint), so it cannot be split")
        return self.bottleneck

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        backbone = dict(d["backbone"])
        backbone["lif"] = LIFConfig(**backbone["lif"])
        backbone["stage_blocks"] = tuple(backbone["stage_blocks"])
        bottleneck = BottleneckConfig(**d["bottleneck"]) if d.get("bottleneck") else None
        return cls(
            backbone=SpikingResNetConfig(**backbone),
            bottleneck=bottleneck,
            time_steps=int(d["time_steps"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            labels=tuple(d.get("labels", ())),
        )


class SplitHead(nn.Module):
    """Device half: stem, RB1..RBk and the spike encoder."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        bottleneck = config._require_split()
        self.config, self.time_steps = config, config.time_steps
        self.stem = DirectEncodingStem(config.backbone.stem_channels, config.backbone.lif)
        self.blocks = build_blocks(config.backbone, 1, bottleneck.split_point)
        block_out = block_specs(config.backbone)[bottleneck.split_point - 1].out_channels
        self.encoder = SpikeEncoder(block_out, bottleneck, config.backbone.lif)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # image: normalized [B, 3, H, W] -> binary spikes [T, B, C', H', W']
        x = self.stem(image, self.time_steps)
        for block in self.blocks.values():
            x = block(x)
        return self.encoder(x)


class SplitTail(nn.Module):
    """Edge half: spike decoder, RBk+1..RB16 and the classifier."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        bottleneck = config._require_split()
        self.config = config
        specs = block_specs(config.backbone)
        self.decoder = SpikeDecoder(specs[bottleneck.split_point - 1].out_channels, bottleneck, config.backbone.lif)
        self.blocks = build_blocks(config.backbone, bottleneck.split_point + 1, NUM_BLOCKS)
        self.classifier = SpikeRateClassifier(specs[-1].out_channels, config.backbone.num_classes)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        # spikes: [T, B, C', H', W'] -> logits [B, num_classes]
        x = self.decoder(spikes)
        for block in self.blocks.values():
            x = block(x)
        return self.classifier(x)


class SpikeBottleNet(nn.Module):
    """The split model run monolithically: forward(x) == tail(head(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.head = SplitHead(config)
        self.tail = SplitTail(config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(image))

    def load_backbone(self, backbone: SpikingResNet) -> None:
        """Start from pre-trained backbone weights (step 2 of the paper's training).

        Head and tail reuse the backbone's parameter names (stem.*, blocks.rb<i>.*, classifier.*),
        so each backbone tensor lands in whichever half holds that layer; only the new encoder and
        decoder keep their initialization.
        """
        state = backbone.state_dict()
        for half in (self.head, self.tail):
            own = half.state_dict()
            half.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


PARTS = ("head", "tail")


def build_model(config: ModelConfig, part: str = "full") -> nn.Module:
    """The module for one part of a checkpoint: "full", or "head" / "tail" of a split model."""
    if part == "full":
        return SpikeBottleNet(config) if config.bottleneck else SpikingResNet(config.backbone, config.time_steps)
    if part == "head":
        return SplitHead(config)
    if part == "tail":
        return SplitTail(config)
    raise ValueError(f"unknown model part {part!r}; expected 'full', 'head' or 'tail'")
