"""Spike ResNet50 for 32x32 inputs (the paper's CIFAR-style backbone).

    image [B, 3, 32, 32]
      -> stem: direct encoding, 3x3 conv -> tdBN -> LIF (no max-pool)     [T, B, 64, 32, 32]
      -> RB1..RB3   bottleneck blocks, width  64, stride 1                 [T, B, 256, 32, 32]
      -> RB4..RB7   bottleneck blocks, width 128, first with stride 2      [T, B, 512, 16, 16]
      -> RB8..RB13  bottleneck blocks, width 256, first with stride 2      [T, B, 1024, 8, 8]
      -> RB14..RB16 bottleneck blocks, width 512, first with stride 2      [T, B, 2048, 4, 4]
      -> classifier: mean over H, W, then over T, then linear              [B, num_classes]

Every block ends in a LIF after the residual add, so each block output is binary spikes; the
16 block outputs RB1..RB16 are the candidate split points. Blocks live in an ``nn.ModuleDict``
keyed ``rb1`` .. ``rb16`` so that a model built from any contiguous range of blocks (the device
head, the edge tail) uses the same parameter names as the full backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import RESIDUAL_ALPHA, ConvBN, ConvBNLIF, DirectEncodingStem
from .neuron import LIF, LIFConfig

NUM_BLOCKS = 16
RESIDUAL_BN_INIT = 0.2  # initial tdBN scale (lambda) of each block's last conv; see SpikingBottleneckBlock


@dataclass(frozen=True)
class SpikingResNetConfig:
    arch: str = "spiking_resnet50"
    width_multiplier: float = 1.0  # 1.0 = the paper's 64/128/256/512; narrow variants keep all 16 blocks
    num_classes: int = 100
    image_size: int = 32
    stage_blocks: tuple[int, ...] = (3, 4, 6, 3)
    expansion: int = 4
    lif: LIFConfig = field(default_factory=LIFConfig)

    @property
    def stem_channels(self) -> int:
        return max(1, round(64 * self.width_multiplier))

    def stage_widths(self) -> tuple[int, ...]:
        return tuple(max(1, round(w * self.width_multiplier)) for w in (64, 128, 256, 512))


@dataclass(frozen=True)
class BlockSpec:
    """Geometry of one residual block, derived from the config (no model needed)."""

    index: int  # 1-based: RB1 .. RB16
    in_channels: int
    width: int  # channels of the inner 1x1 / 3x3 convs
    out_channels: int
    stride: int
    out_size: int  # H = W of the block output

    @property
    def name(self) -> str:
        return f"rb{self.index}"


def block_specs(config: SpikingResNetConfig) -> list[BlockSpec]:
    specs, in_ch, size = [], config.stem_channels, config.image_size
    for stage, (n_blocks, width) in enumerate(zip(config.stage_blocks, config.stage_widths())):
        for i in range(n_blocks):
            stride = 2 if (stage > 0 and i == 0) else 1
            size = -(-size // stride)
            out_ch = width * config.expansion
            specs.append(BlockSpec(len(specs) + 1, in_ch, width, out_ch, stride, size))
            in_ch = out_ch
    assert len(specs) == NUM_BLOCKS, f"a Spike ResNet50 has {NUM_BLOCKS} blocks, config gives {len(specs)}"
    return specs


class SpikingBottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1, each conv -> tdBN, LIF after the first two and after the add."""

    def __init__(self, spec: BlockSpec, lif: LIFConfig) -> None:
        super().__init__()
        self.conv1 = ConvBNLIF(spec.in_channels, spec.width, 1, 1, lif)
        self.conv2 = ConvBNLIF(spec.width, spec.width, 3, spec.stride, lif)
        self.conv3 = ConvBN(spec.width, spec.out_channels, 1, 1, lif, alpha=RESIDUAL_ALPHA)
        needs_projection = spec.stride != 1 or spec.in_channels != spec.out_channels
        # down-sampling shortcut: 1x1 conv -> tdBN on the input spikes; otherwise identity
        self.shortcut = (ConvBN(spec.in_channels, spec.out_channels, 1, spec.stride, lif, alpha=RESIDUAL_ALPHA)
                         if needs_projection else nn.Identity())
        self.lif = LIF(lif)
        # Start each block close to its shortcut (timm's zero_init_last, adapted to spikes). With the
        # residual tdBN at full scale the net is chaotic: 16 thresholded blocks scramble the input (at
        # init a linear probe on RB13 spikes of the digits is at chance; a 1e-4 change of the stem
        # weights flips a third of RB16's spikes), the surrogate gradient cannot follow, and training
        # stalls. A small scale keeps each block's output close to its input spikes (the same change
        # then flips under 1% of RB16's spikes). Not exactly zero: then u sits at 0 or 1, on the edge
        # of the surrogate window (|u - v_th| < a/2), and no gradient flows.
        nn.init.constant_(self.conv3.bn.weight, RESIDUAL_BN_INIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: spikes [T, B, C_in, H, W] -> spikes [T, B, C_out, H/stride, W/stride]
        return self.lif(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


def build_blocks(config: SpikingResNetConfig, first: int, last: int) -> nn.ModuleDict:
    """Blocks RB`first` .. RB`last` (inclusive, 1-based), keyed rb<i>."""
    return nn.ModuleDict({
        spec.name: SpikingBottleneckBlock(spec, config.lif)
        for spec in block_specs(config)[first - 1:last]
    })


class SpikeRateClassifier(nn.Module):
    """Global average pool over space, mean over time, linear: spikes [T, B, C, H, W] -> logits [B, K]."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(3, 4)).mean(dim=0))


class SpikingResNet(nn.Module):
    """The whole backbone without a bottleneck (pre-training, step 1 of the paper's training)."""

    def __init__(self, config: SpikingResNetConfig, time_steps: int) -> None:
        super().__init__()
        self.config, self.time_steps = config, time_steps
        self.stem = DirectEncodingStem(config.stem_channels, config.lif)
        self.blocks = build_blocks(config, 1, NUM_BLOCKS)
        self.classifier = SpikeRateClassifier(block_specs(config)[-1].out_channels, config.num_classes)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image, self.time_steps)  # [T, B, C, H, W]
        for block in self.blocks.values():
            x = block(x)
        return x  # RB16 spikes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(image))
