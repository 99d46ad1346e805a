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

from typing import Literal, overload

import torch
from torch import nn

from .backbones.spiking_backbone import BlockSequence, SpikingBackbone
from .bottleneck import BottleneckConfig
from .energy import ConvRole, declare_role
from .errors import ConfigError
from .layers import SpikeConv2d, SpikeConvTranspose2d, TimeFolded
from .lif_config import LIFConfig
from .model_config import ModelConfig
from .neuron import LIF, StepState, stepping
from .td_batch_norm import TdBatchNorm


class SpikeEncoder(nn.Module):
    """Device side: block spikes [T, B, C, H, W] -> transmitted spikes [T, B, C', H', W']."""

    def __init__(self, in_channels: int, config: BottleneckConfig, lif: LIFConfig) -> None:
        super().__init__()
        conv = SpikeConv2d(in_channels, config.channels, 3, config.stride, padding=1, bias=False)
        self.conv = TimeFolded(declare_role(conv, ConvRole.ENCODER))
        self.bn = TdBatchNorm(config.channels, lif.v_th)
        # in inference the spikes leave as bools, a byte each, which the codec packs without a conversion
        self.lif = LIF(lif, inference_dtype=torch.bool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.conv(x), self.bn)


class SpikeDecoder(nn.Module):
    """Edge side: received spikes [T, B, C', H', W'] -> block-shaped spikes [T, B, C, H, W]."""

    def __init__(self, out_channels: int, config: BottleneckConfig, lif: LIFConfig) -> None:
        super().__init__()
        # output_padding = stride - 1 restores the exact even H, W that a stride-2 encoder halved
        self.conv = TimeFolded(
            SpikeConvTranspose2d(
                config.channels, out_channels, 3, config.stride, padding=1, output_padding=config.stride - 1, bias=False
            )
        )
        self.bn = TdBatchNorm(out_channels, lif.v_th)
        self.lif = LIF(lif, inplace=True)  # its input is the transposed conv's output, read by nothing else

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: bools as unpacked from the wire (or the encoder's, in one process), float32 under autograd. The
        # transposed conv takes its weights' dtype; bools widen through uint8, as torch converts bool to float
        # in a scalar loop (5x slower here) but uint8 to float in a vectorized one
        if x.dtype == torch.bool:
            x = x.view(torch.uint8)
        return self.lif(self.conv(x.to(self.conv.module.weight.dtype)), self.bn)


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
