"""The spiking bottleneck unit (paper section 3.5) and the paper's per-split-point preset.

After block RBk (C x H x W spikes) the device runs the encoder

    conv 3x3, stride s (1: channel reduction only, 2: also halve H and W) -> tdBN -> LIF

to C' channels. Its output, a binary tensor of T x C' x H' x W' bits per image, is what crosses the
network. The edge runs the decoder

    ConvTranspose2d 3x3, stride s -> tdBN -> LIF

back to C x H x W spikes and continues with RBk+1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import TdBatchNorm, TimeFolded
from .neuron import LIF, LIFConfig
from .spiking_resnet import NUM_BLOCKS, SpikingResNetConfig, block_specs


@dataclass(frozen=True)
class BottleneckConfig:
    split_point: int  # k: the bottleneck follows RBk, 1..16
    channels: int  # C'
    stride: int = 1  # 1 = channel reduction only, 2 = also halve H and W

    def __post_init__(self) -> None:
        if not 1 <= self.split_point <= NUM_BLOCKS:
            raise ValueError(f"split_point must be in 1..{NUM_BLOCKS}, got {self.split_point}")
        if self.channels < 1:
            raise ValueError(f"bottleneck channels must be >= 1, got {self.channels}")
        if self.stride not in (1, 2):
            raise ValueError(f"bottleneck stride must be 1 or 2, got {self.stride}")


def spike_shape(backbone: SpikingResNetConfig, bottleneck: BottleneckConfig, time_steps: int) -> tuple[int, ...]:
    """(T, C', H', W') of one image's transmitted spike tensor."""
    size = block_specs(backbone)[bottleneck.split_point - 1].out_size
    if size % bottleneck.stride:
        # the decoder's transposed conv can only restore an even size exactly (output_padding = 1)
        raise ValueError(f"a stride-{bottleneck.stride} bottleneck at RB{bottleneck.split_point} needs an even "
                         f"block size; RB{bottleneck.split_point} outputs {size}x{size}")
    out = size // bottleneck.stride
    return (time_steps, bottleneck.channels, out, out)


class SpikeEncoder(nn.Module):
    """Device side: block spikes [T, B, C, H, W] -> transmitted spikes [T, B, C', H', W']."""

    def __init__(self, in_channels: int, config: BottleneckConfig, lif: LIFConfig) -> None:
        super().__init__()
        self.conv = TimeFolded(nn.Conv2d(in_channels, config.channels, 3, config.stride, padding=1, bias=False))
        self.bn = TdBatchNorm(config.channels, lif.v_th)
        self.lif = LIF(lif)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.bn(self.conv(x)))


class SpikeDecoder(nn.Module):
    """Edge side: received spikes [T, B, C', H', W'] -> block-shaped spikes [T, B, C, H, W]."""

    def __init__(self, out_channels: int, config: BottleneckConfig, lif: LIFConfig) -> None:
        super().__init__()
        # output_padding = stride - 1 restores the exact even H, W that a stride-2 encoder halved
        self.conv = TimeFolded(nn.ConvTranspose2d(config.channels, out_channels, 3, config.stride, padding=1,
                                                  output_padding=config.stride - 1, bias=False))
        self.bn = TdBatchNorm(out_channels, lif.v_th)
        self.lif = LIF(lif)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.bn(self.conv(x)))


# ---------------------------------------------------------------------------------------------
# The paper's Table 1 (SpikeBottleNet row, full-width Spike ResNet50, CIFAR-100), RB1 .. RB16.
PAPER_TRANSMITTED_BYTES = (8192, 4096, 4096, 4096, 4096, 4096, 4096, 2048, 1024, 1024, 1024, 1024, 2048, 256, 512, 64)
PAPER_TIME_STEPS = (4, 2, 2, 2, 2, 2, 2, 4, 2, 2, 2, 2, 4, 2, 4, 4)
# BottleNet++ (the ANN baseline) bytes per image at the same points, from the same table.
BOTTLENETPP_BYTES = (8192, 16384, 16384, 8192, 8192, 8192, 8192, 4096, 4096, 4096, 4096, 4096, 4096, 1024, 1024, 128)
PAPER_STRIDE = tuple(2 if k == NUM_BLOCKS else 1 for k in range(1, NUM_BLOCKS + 1))  # only RB16 halves H, W


@dataclass(frozen=True)
class SplitPreset:
    bottleneck: BottleneckConfig
    time_steps: int


def paper_preset(split_point: int, backbone: SpikingResNetConfig = SpikingResNetConfig()) -> SplitPreset:
    """(C', stride, T) at RBk such that T*C'*H'*W' bits are the paper's Table 1 bytes.

    C' is derived from the bytes, not tabulated. For a narrow backbone (width multiplier m) C' is
    scaled by m, keeping the paper's stride and T, so demos keep the same per-point structure.
    """
    if not 1 <= split_point <= NUM_BLOCKS:
        raise ValueError(f"split_point must be in 1..{NUM_BLOCKS}, got {split_point}")
    i = split_point - 1
    stride, t = PAPER_STRIDE[i], PAPER_TIME_STEPS[i]
    full_size = block_specs(SpikingResNetConfig())[i].out_size
    out = full_size // stride
    bits = PAPER_TRANSMITTED_BYTES[i] * 8
    channels, remainder = divmod(bits, t * out * out)
    assert remainder == 0, f"RB{split_point}: {bits} bits do not divide into T={t} x {out}x{out}"
    channels = max(1, round(channels * backbone.width_multiplier))
    return SplitPreset(BottleneckConfig(split_point, channels, stride), t)
