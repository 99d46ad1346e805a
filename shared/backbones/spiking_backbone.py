"""The one block loop over any backbone's blocks, and the whole backbone as one model (pre-training)."""

from __future__ import annotations

import torch
from torch import nn

from .base import BackboneConfig


class BlockSequence(nn.ModuleDict):
    """Blocks ``first`` .. ``last`` (1-based, inclusive) of a backbone, keyed by split point ("rb8").

    The one block loop: the whole backbone, the device head and the edge tail all run their blocks
    through it, and share parameter names because the keys come from the split points.
    """

    def __init__(self, config: BackboneConfig, first: int, last: int) -> None:
        super().__init__({point.key: config.block(point.index) for point in config.split_points()[first - 1 : last]})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # spikes [T, B, C, H, W] -> spikes of the last block [T, B, C', H', W']
        for block in self.values():
            x = block(x)
        return x


class SpikingBackbone(nn.Module):
    """A whole backbone without a bottleneck (pre-training, step 1 of the paper's training)."""

    def __init__(self, config: BackboneConfig, time_steps: int) -> None:
        super().__init__()
        self.config, self.time_steps = config, time_steps
        self.stem = config.stem()
        self.blocks = BlockSequence(config, 1, len(config.split_points()))
        self.classifier = config.classifier()

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        # image [B, 3, H, W] -> spikes of the last block [T, B, C, H, W]
        return self.blocks(self.stem(image, self.time_steps))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)  # [B, num_classes]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(image))
