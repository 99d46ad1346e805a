"""The Spike ResNet50's residual block, as torch modules (its geometry is in spiking_resnet.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..energy import ConvRole
from ..layers import RESIDUAL_ALPHA, RESIDUAL_BN_INIT, ConvBN, ConvBNLIF
from ..lif_config import LIFConfig
from ..neuron import LIF

if TYPE_CHECKING:
    from .spiking_resnet import BlockSpec


class SpikingBottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1, each conv -> tdBN, LIF after the first two and after the add."""

    def __init__(self, spec: BlockSpec, lif: LIFConfig) -> None:
        super().__init__()
        self.conv1 = ConvBNLIF(spec.in_channels, spec.width, 1, 1, lif, role=ConvRole.BLOCK)
        self.conv2 = ConvBNLIF(spec.width, spec.width, 3, spec.stride, lif, role=ConvRole.BLOCK)
        self.conv3 = ConvBN(spec.width, spec.out_channels, 1, 1, lif, role=ConvRole.BLOCK, alpha=RESIDUAL_ALPHA)
        needs_projection = spec.stride != 1 or spec.in_channels != spec.out_channels
        # down-sampling shortcut: 1x1 conv -> tdBN on the input spikes; otherwise identity
        self.shortcut = (
            ConvBN(
                spec.in_channels, spec.out_channels, 1, spec.stride, lif, role=ConvRole.SHORTCUT, alpha=RESIDUAL_ALPHA
            )
            if needs_projection
            else nn.Identity()
        )
        self.lif = LIF(lif, inplace=True)  # its input is conv3's output, read by nothing else
        nn.init.constant_(self.residual_bn.weight, RESIDUAL_BN_INIT)  # start near the shortcut (layers.py)

    @property
    def residual_bn(self) -> nn.BatchNorm2d:
        """The residual branch's last tdBN, whose scale starts small (``RESIDUAL_BN_INIT``)."""
        return self.conv3.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: spikes [T, B, C_in, H, W] -> spikes [T, B, C_out, H/stride, W/stride]
        # LIF(conv3's tdBN(conv3(...)) + shortcut(x)): the LIF applies the tdBN and the add, in one pass in inference
        residual = self.conv3.conv(self.conv2(self.conv1(x)))
        return self.lif(residual, self.conv3.bn, shortcut=self.shortcut(x))
