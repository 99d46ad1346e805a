"""Training with the wire in mind: fewer transmitted spikes, and a tail that tolerates flipped and lost ones.

    loss = cross-entropy + rate_weight * (firing rate of the transmitted spikes)
    spikes reaching the tail in training = the head's spikes with each bit flipped with flip_probability,
                                           and each image's channel silenced with erase_probability

The rate term trades accuracy for bytes below the paper's fixed C': fewer spikes cost fewer bits under
the entropy codec (shared/entropy_codec.py), whose cost follows the spikes' entropy. The flips put a
binary symmetric channel (shared/channel.py's ``bsc``) in the training loop, so the tail learns to
classify through bit errors; the surrogate gradient passes a flipped bit's gradient with its sign
reversed (s' = s + n - 2sn, ds'/ds = 1 - 2n). Silenced channels are what an entropy chunk that fails
its CRC becomes at the edge (shared/codec.py's ``decode_received``): a chunk per channel when a frame is
cut into C' chunks. All act on the head's output through a forward hook,
so the model and the trainer's loop stay as they are; in evaluation the hook only measures. The three
terms are a ``WireTraining`` (shared/checkpoint.py), which a refined checkpoint's info records.
"""

from __future__ import annotations

from types import TracebackType

import torch
from torch import nn

from spikebottlenet.shared.checkpoint_metadata import WireTraining


class WireHook:
    """While entered, watches (and in training, flips) what ``head`` transmits; ``penalty()`` is the rate term of the
    last forward."""

    def __init__(self, head: nn.Module, wire: WireTraining, generator: torch.Generator | None = None) -> None:
        self.head, self.wire, self.generator = head, wire, generator
        self.firing_rate: torch.Tensor | None = None  # of the last forward's transmitted spikes, before any flip
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def __enter__(self) -> WireHook:
        self._handle = self.head.register_forward_hook(self._transmit)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.remove()

    def _transmit(self, module: nn.Module, inputs: object, spikes: torch.Tensor) -> torch.Tensor:
        # spikes: [T, B, C', H', W'] in {0, 1}
        self.firing_rate = spikes.float().mean()
        if not module.training:
            return spikes
        if self.wire.flip_probability > 0:
            noise = (
                torch.rand(spikes.shape, device=spikes.device, generator=self.generator) < self.wire.flip_probability
            ).to(spikes.dtype)
            spikes = spikes + noise - 2 * spikes * noise  # XOR that keeps the surrogate gradient
        if self.wire.erase_probability > 0:
            t, b, c, h, w = spikes.shape
            kept = (
                torch.rand((1, b, c, 1, 1), device=spikes.device, generator=self.generator)
                >= self.wire.erase_probability
            ).to(spikes.dtype)  # one draw per image and channel, all T, H', W'
            spikes = spikes * kept
        return spikes

    def penalty(self) -> torch.Tensor:
        if self.firing_rate is None:
            raise RuntimeError("no forward has run through the head yet")
        return self.wire.rate_weight * self.firing_rate
