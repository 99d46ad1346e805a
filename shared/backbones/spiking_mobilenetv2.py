"""Spiking MobileNetV2 for 32x32 inputs (the second backbone of the SpikeBottleNet paper's edge-cloud version).

    image [B, 3, 32, 32]
      -> stem: direct encoding, 3x3 conv (stride 1) -> tdBN -> LIF         [T, B, 32, 32, 32]
      -> IRB1          t=1, c=16                                          [T, B, 16, 32, 32]
      -> IRB2..IRB3    t=6, c=24                                          [T, B, 24, 32, 32]
      -> IRB4..IRB6    t=6, c=32, first with stride 2                     [T, B, 32, 16, 16]
      -> IRB7..IRB10   t=6, c=64, first with stride 2                     [T, B, 64, 8, 8]
      -> IRB11..IRB13  t=6, c=96                                          [T, B, 96, 8, 8]
      -> IRB14..IRB16  t=6, c=160, first with stride 2                    [T, B, 160, 4, 4]
      -> IRB17         t=6, c=320                                         [T, B, 320, 4, 4]
      -> classifier: 1x1 conv to 1280 -> tdBN -> LIF, mean over H, W and T, linear   [B, num_classes]

The stages are MobileNetV2's (expansion t, channels c, repeats n, stride s), with the ImageNet
strides of the stem and the second stage set to 1 for 32x32 inputs, as CIFAR variants do. Each
inverted residual block (IRB) is

    1x1 expand conv -> tdBN -> LIF        (skipped when t = 1)
    3x3 depthwise conv (stride s) -> tdBN -> LIF
    1x1 project conv -> tdBN
    + the identity shortcut when s = 1 and the channels match
    -> LIF

The ANN's block ends linearly (no activation after the projection); here a LIF follows, so that
every block output is binary spikes and each of the 17 IRBs is a split point. The width multiplier
scales every channel count, the final 1280 included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..bottleneck import SplitPreset, bit_compression, preset_for_compression
from .base import BackboneConfig, SplitPoint
from .spiking_resnet import SpikingResNetConfig

if TYPE_CHECKING:
    from torch import nn

# (expansion t, output channels c, repeats n, stride s of the first block) per stage
INVERTED_RESIDUAL_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclass(frozen=True)
class BlockSpec:
    """Geometry of one inverted residual block, derived from the config (no model needed)."""

    in_channels: int
    hidden_channels: int  # after the expansion: in_channels * t
    out_channels: int
    stride: int
    out_size: int  # H = W of the block output

    @property
    def has_shortcut(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class SpikingMobileNetV2Config(BackboneConfig):
    ARCH = "spiking_mobilenetv2"
    ALIASES = ("mobilenetv2",)

    arch: str = ARCH
    # multiples of 8 at narrow widths: at width 1/16 the nearest count gave the first blocks one or two
    # channels, and a one-channel depthwise conv cannot learn much
    channel_divisor: int = 8
    stem_channels: int = 32  # at full width
    last_channels: int = 1280  # the classifier's 1x1 conv, at full width
    stages: tuple[tuple[int, int, int, int], ...] = INVERTED_RESIDUAL_STAGES

    def block_specs(self) -> list[BlockSpec]:
        specs, in_ch, size = [], self.scaled(self.stem_channels), self.image_size
        for t, c, n, s in self.stages:
            out_ch = self.scaled(c)
            for i in range(n):
                stride = s if i == 0 else 1
                size = -(-size // stride)
                specs.append(BlockSpec(in_ch, in_ch * t, out_ch, stride, size))
                in_ch = out_ch
        return specs

    def split_points(self) -> tuple[SplitPoint, ...]:
        return tuple(
            SplitPoint(i, f"IRB{i}", s.out_channels, s.out_size, s.out_size)
            for i, s in enumerate(self.block_specs(), start=1)
        )

    # The builders import the torch modules when called: the config itself (geometry, split points,
    # presets) is read by processes without torch, such as the ONNX device

    def stem(self) -> nn.Module:
        from ..layers import DirectEncodingStem

        return DirectEncodingStem(self.scaled(self.stem_channels), self.lif)

    def block(self, index: int) -> nn.Module:
        from .spiking_mobilenetv2_blocks import InvertedResidualBlock

        self.split_point(index)  # range check with a readable error
        return InvertedResidualBlock(self.block_specs()[index - 1], self.lif)

    def classifier(self) -> nn.Module:
        from .spiking_mobilenetv2_blocks import ConvSpikeRateClassifier

        return ConvSpikeRateClassifier(
            self.split_points()[-1].channels, self.scaled(self.last_channels), self.num_classes, self.lif
        )

    def bottleneck_preset(self, index: int) -> SplitPreset:
        """The paper's rule (shared/bottleneck.py): the ResNet preset's compression at the same
        relative depth, stride 2 only at the last split point, T = 2 early and 4 late."""
        n = len(self.split_points())
        point = self.split_point(index)
        resnet = SpikingResNetConfig(image_size=self.image_size)
        depth = len(resnet.split_points())
        reference = resnet.bottleneck_preset(max(1, round(depth * index / n)))
        compression = bit_compression(resnet.split_point(reference.bottleneck.split_point), reference.bottleneck)
        stride = 2 if index == n else 1
        return preset_for_compression(point, compression, stride, 2 if 2 * index <= n else 4)
