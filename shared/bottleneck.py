"""The spiking bottleneck unit (paper section 3.5) and the paper's rule for sizing it.

After the block of split point k (C x H x W spikes) the device runs the encoder (``SpikeEncoder``,
shared/split_model.py)

    conv 3x3, stride s (1: channel reduction only, 2: also halve H and W) -> tdBN -> LIF

to C' channels. Its output, a binary tensor of T x C' x H' x W' bits per image, is what crosses the
network. The edge runs the decoder (``SpikeDecoder``)

    ConvTranspose2d 3x3, stride s -> tdBN -> LIF

back to C x H x W spikes and continues with block k+1.

The paper's rule (every backbone's ``bottleneck_preset`` follows it)
--------------------------------------------------------------------
* Stride: 1 (channel reduction only) at every split point except the last, where the encoder also
  halves H and W (stride 2).
* Compression: C' is chosen for a bit compression C*H*W / (C'*H'*W') (the block's own spikes over
  the transmitted ones, T cancelling): ``C' = max(1, round(C*H*W / (compression * H'*W')))``.
* Spike ResNet50: compression and T are those of the paper's Table 1 at RBk (16x, 8x at RB4..RB7,
  32x at RB14/RB15, 256x at RB16; T = 2 or 4), so the full-width model sends exactly Table 1's bytes.
* Other backbones (the spiking MobileNetV2): the compression the ResNet preset reaches at the same
  relative depth, RB j with j = round(16 * k / n) (at least 1) for split point k of n, so the last
  split point gets the 256x of RB16; T = 2 for the early half of the split points (k <= n / 2) and
  T = 4 for the late half, where fewer, deeper features need more steps to carry the same information.

At narrow widths C' bottoms out at one channel, so the compression there can fall short of the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .backbones.base import SplitPoint


@dataclass(frozen=True)
class BottleneckConfig:
    split_point: int  # k: the bottleneck follows the block of split point k (1-based)
    channels: int  # C'
    stride: int = 1  # 1 = channel reduction only, 2 = also halve H and W

    def __post_init__(self) -> None:
        if self.split_point < 1:
            raise ConfigError(f"split_point must be >= 1, got {self.split_point}")
        if self.channels < 1:
            raise ConfigError(f"bottleneck channels must be >= 1, got {self.channels}")
        if self.stride not in (1, 2):
            raise ConfigError(f"bottleneck stride must be 1 or 2, got {self.stride}")


@dataclass(frozen=True)
class SplitPreset:
    bottleneck: BottleneckConfig
    time_steps: int


def spike_shape(point: SplitPoint, bottleneck: BottleneckConfig, time_steps: int) -> tuple[int, ...]:
    """(T, C', H', W') of one image's transmitted spike tensor after ``point``'s block."""
    if point.height % bottleneck.stride or point.width % bottleneck.stride:
        # the decoder's transposed conv can only restore an even size exactly (output_padding = 1)
        raise ConfigError(
            f"a stride-{bottleneck.stride} bottleneck at {point.name} needs an even block size; "
            f"{point.name} outputs {point.height}x{point.width}"
        )
    return (time_steps, bottleneck.channels, point.height // bottleneck.stride, point.width // bottleneck.stride)


def bit_compression(point: SplitPoint, bottleneck: BottleneckConfig) -> float:
    """C*H*W / (C'*H'*W'): the block's output spikes over the transmitted ones (T cancels)."""
    _, c, h, w = spike_shape(point, bottleneck, 1)
    return point.channels * point.height * point.width / (c * h * w)


def preset_for_compression(point: SplitPoint, compression: float, stride: int, time_steps: int) -> SplitPreset:
    """The bottleneck at ``point`` whose C' comes closest to ``compression`` (the rule above)."""
    out_h, out_w = point.height // stride, point.width // stride
    channels = max(1, round(point.channels * point.height * point.width / (compression * out_h * out_w)))
    return SplitPreset(BottleneckConfig(point.index, channels, stride), time_steps)
