"""The spiking MobileNetV2's inverted residual block and classifier, as torch modules (its geometry is in
spiking_mobilenetv2.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..energy import ConvRole
from ..layers import RESIDUAL_ALPHA, RESIDUAL_BN_INIT, ConvBN, ConvBNLIF, SpikeRateClassifier
from ..lif_config import LIFConfig
from ..neuron import LIF

if TYPE_CHECKING:
    from .spiking_mobilenetv2 import BlockSpec

# Blocks without a shortcut start near the identity: Dirac weights (each output channel copies the
# input channel of the same index, the depthwise conv its centre tap) plus the default random
# initialization scaled by this. Without it the 7 shortcut-free IRBs act as random thresholded maps
# that scramble the input, as the ResNet's residual branches did at full scale (layers.py): at init a
# linear probe on the digits' spikes (width 1/4, T=1) falls from 89% at IRB3 to chance (10%) at
# IRB14 and IRB17, and the network does not train (loss stuck at ln 10 for 6 epochs). With it the
# probe keeps 82% at IRB17. The random part keeps every channel firing and trainable: a channel with
# zero weights would sit below threshold, outside the surrogate window, with no gradient.
IDENTITY_INIT_NOISE = 0.5


class InvertedResidualBlock(nn.Module):
    """[1x1 expand] -> 3x3 depthwise -> 1x1 project (each conv -> tdBN, LIF after the first two),
    + identity shortcut where shapes allow, -> LIF: spikes in, spikes out."""

    def __init__(self, spec: BlockSpec, lif: LIFConfig) -> None:
        super().__init__()
        hidden = spec.hidden_channels
        self.expand = (
            ConvBNLIF(spec.in_channels, hidden, 1, 1, lif, role=ConvRole.BLOCK)
            if hidden != spec.in_channels
            else nn.Identity()
        )
        self.depthwise = ConvBNLIF(hidden, hidden, 3, spec.stride, lif, role=ConvRole.BLOCK, groups=hidden)
        self.has_shortcut = spec.has_shortcut
        # alpha = 1/sqrt(2) where two branches are summed before the LIF, as in the ResNet's blocks
        self.project = ConvBN(
            hidden,
            spec.out_channels,
            1,
            1,
            lif,
            role=ConvRole.BLOCK,
            alpha=RESIDUAL_ALPHA if self.has_shortcut else 1.0,
        )
        self.lif = LIF(lif, inplace=True)  # its input is the projection's output, read by nothing else
        if self.residual_bn is not None:
            nn.init.constant_(self.residual_bn.weight, RESIDUAL_BN_INIT)  # start near the shortcut (layers.py)
        else:
            for layer in (self.expand, self.depthwise, self.project):
                if not isinstance(layer, nn.Identity):
                    start_near_identity(layer.conv.module)

    @property
    def residual_bn(self) -> nn.BatchNorm2d | None:
        """The residual branch's last tdBN; None for a block without a shortcut."""
        return self.project.bn if self.has_shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: spikes [T, B, C_in, H, W] -> spikes [T, B, C_out, H/stride, W/stride]
        # LIF(project's tdBN(project(...)) [+ x]): the LIF applies the tdBN and the add, in one pass in inference
        projected = self.project.conv(self.depthwise(self.expand(x)))
        return self.lif(projected, self.project.bn, shortcut=x if self.has_shortcut else None)


@torch.no_grad()
def start_near_identity(conv: nn.Conv2d) -> None:
    """weight = Dirac identity + IDENTITY_INIT_NOISE * (default random weight)."""
    identity = nn.init.dirac_(torch.empty_like(conv.weight), groups=conv.groups)
    conv.weight.mul_(IDENTITY_INIT_NOISE).add_(identity)


class ConvSpikeRateClassifier(nn.Module):
    """1x1 conv -> tdBN -> LIF to ``hidden`` channels, then the spike-rate classifier (pool, mean over T, linear)."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int, lif: LIFConfig) -> None:
        super().__init__()
        self.conv = ConvBNLIF(in_channels, hidden, 1, 1, lif, role=ConvRole.CLASSIFIER)
        self.rate = SpikeRateClassifier(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # spikes [T, B, C, H, W] -> spikes [T, B, hidden, H, W] -> logits [B, num_classes]
        return self.rate(self.conv(x))
