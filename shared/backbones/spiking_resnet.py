"""Spike ResNet50 for 32x32 inputs (the paper's CIFAR-style backbone).

    image [B, 3, 32, 32]
      -> stem: direct encoding, 3x3 conv -> tdBN -> LIF (no max-pool)     [T, B, 64, 32, 32]
      -> RB1..RB3   bottleneck blocks, width  64, stride 1                 [T, B, 256, 32, 32]
      -> RB4..RB7   bottleneck blocks, width 128, first with stride 2      [T, B, 512, 16, 16]
      -> RB8..RB13  bottleneck blocks, width 256, first with stride 2      [T, B, 1024, 8, 8]
      -> RB14..RB16 bottleneck blocks, width 512, first with stride 2      [T, B, 2048, 4, 4]
      -> classifier: mean over H, W, then over T, then linear              [B, num_classes]

Every block ends in a LIF after the residual add, so each block output is binary spikes; the
16 block outputs RB1..RB16 are the split points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..bottleneck import BottleneckConfig, SplitPreset, bit_compression, preset_for_compression
from ..errors import ConfigError
from .base import BackboneConfig, SplitPoint

if TYPE_CHECKING:
    from torch import nn

# The paper's Table 1 (SpikeBottleNet row, full-width Spike ResNet50, CIFAR-100), RB1 .. RB16: the
# bytes per image its sweep selected, and their T. Only RB16 halves H and W (stride 2).
PAPER_TRANSMITTED_BYTES = (8192, 4096, 4096, 4096, 4096, 4096, 4096, 2048, 1024, 1024, 1024, 1024, 2048, 256, 512, 64)
PAPER_TIME_STEPS = (4, 2, 2, 2, 2, 2, 2, 4, 2, 2, 2, 2, 4, 2, 4, 4)
# BottleNet++ (the ANN baseline) bytes per image at the same points, from the same table.
BOTTLENETPP_BYTES = (8192, 16384, 16384, 8192, 8192, 8192, 8192, 4096, 4096, 4096, 4096, 4096, 4096, 1024, 1024, 128)


@dataclass(frozen=True)
class BlockSpec:
    """Geometry of one residual block, derived from the config (no model needed)."""

    in_channels: int
    width: int  # channels of the inner 1x1 / 3x3 convs
    out_channels: int
    stride: int
    out_size: int  # H = W of the block output


@dataclass(frozen=True)
class SpikingResNetConfig(BackboneConfig):
    ARCH = "spiking_resnet50"
    ALIASES = ("resnet50",)

    arch: str = ARCH
    stage_blocks: tuple[int, ...] = (3, 4, 6, 3)
    expansion: int = 4

    def stage_widths(self) -> tuple[int, ...]:
        return tuple(self.scaled(w) for w in (64, 128, 256, 512))

    def block_specs(self) -> list[BlockSpec]:
        specs, in_ch, size = [], self.scaled(64), self.image_size
        for stage, (n_blocks, width) in enumerate(zip(self.stage_blocks, self.stage_widths(), strict=True)):
            for i in range(n_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                size = -(-size // stride)
                out_ch = width * self.expansion
                specs.append(BlockSpec(in_ch, width, out_ch, stride, size))
                in_ch = out_ch
        return specs

    def split_points(self) -> tuple[SplitPoint, ...]:
        return tuple(
            SplitPoint(i, f"RB{i}", s.out_channels, s.out_size, s.out_size)
            for i, s in enumerate(self.block_specs(), start=1)
        )

    # The builders import the torch modules when called: the config itself (geometry, split points,
    # presets) is read by processes without torch, such as the ONNX device

    def stem(self) -> nn.Module:
        from ..layers import DirectEncodingStem

        return DirectEncodingStem(self.scaled(64), self.lif)

    def block(self, index: int) -> nn.Module:
        from .spiking_resnet_blocks import SpikingBottleneckBlock

        self.split_point(index)  # range check with a readable error
        return SpikingBottleneckBlock(self.block_specs()[index - 1], self.lif)

    def classifier(self) -> nn.Module:
        from ..layers import SpikeRateClassifier

        return SpikeRateClassifier(self.split_points()[-1].channels, self.num_classes)

    def bottlenetpp_bytes(self, index: int) -> int | None:
        self.split_point(index)
        # the paper's figures are for the full-width model on 32x32 images
        return BOTTLENETPP_BYTES[index - 1] if (self.width_multiplier, self.image_size) == (1.0, 32) else None

    def bottleneck_preset(self, index: int) -> SplitPreset:
        """Table 1 at RBk: its compression and T, on this backbone's width.

        C' follows from the bytes of the full-width model (T*C'*H'*W' bits); what carries over to a
        narrow backbone is the compression C*H*W / (C'*H'*W'), so C' scales with the width.
        """
        point = self.split_point(index)
        full = SpikingResNetConfig(image_size=self.image_size).split_point(index)
        stride = 2 if index == len(self.split_points()) else 1
        t = PAPER_TIME_STEPS[index - 1]
        channels, remainder = divmod(PAPER_TRANSMITTED_BYTES[index - 1] * 8, t * (full.height // stride) ** 2)
        if remainder:  # an image size other than the paper's 32, whose H' x W' Table 1's bytes need not fit
            raise ConfigError(
                f"RB{index}: Table 1's {PAPER_TRANSMITTED_BYTES[index - 1]} bytes do not divide into "
                f"T={t} x H' x W' at image size {self.image_size}"
            )
        compression = bit_compression(full, BottleneckConfig(index, channels, stride))
        return preset_for_compression(point, compression, stride, t)
