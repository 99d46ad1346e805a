"""What a torch head's convs do as it runs, for the energy accounting of shared/energy.py.

``ActivityMonitor`` puts a forward hook on every Conv2d of a head, which records the conv's FLOPs and the spikes
into it per image; ``structural_flops`` runs the same hooks on the meta device for FLOPs alone. The arithmetic
that turns those counts into energy is shared/energy.py's, which needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .energy import ROLE_ATTRIBUTE, ConvLayer, ConvRole, CountMode, EnergyEstimate, counted_layers, estimate_energy


@dataclass
class HookedConv(ConvLayer):
    """One conv of a head in one forward pass, as ActivityMonitor's hook saw it."""

    # [B] spikes into the layer over all T, on the head's device; None for the stem (its input is the image) and on
    # the meta device
    spikes: torch.Tensor | None = None


@dataclass
class ActivityMonitor:
    """Forward hooks on every Conv2d of a head; after a forward, holds what each layer did.

    with ActivityMonitor(head, time_steps=T) as monitor:
        spikes = head(images)
    estimates = monitor.estimates()  # one EnergyEstimate per image
    """

    model: nn.Module
    time_steps: int
    mode: CountMode = CountMode.PAPER
    layers: list[HookedConv] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mode = CountMode(self.mode)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> ActivityMonitor:
        self.layers.clear()
        for name, module in self.model.named_modules():
            # ConvTranspose2d is not a Conv2d subclass: the decoder (edge side) is never counted
            if isinstance(module, nn.Conv2d):
                role = getattr(module, ROLE_ATTRIBUTE, None)
                if role is None:
                    self.__exit__()
                    raise ValueError(f"conv {name!r} declares no energy role (shared.energy.declare_role)")
                self._handles.append(module.register_forward_hook(self._hook(name.replace(".module", ""), role)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str, role: ConvRole):
        def record(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0]  # [T*B, C, H, W] for time-folded convs; [B, 3, H, W] for the stem
            k_h, k_w = module.kernel_size
            flops = output[0].numel() * (module.in_channels // module.groups) * k_h * k_w
            spikes = None
            if role is not ConvRole.STEM and not x.is_meta:
                # spikes are 0/1, so their count is the sum; rows are t-major after folding
                spikes = x.detach().reshape(self.time_steps, -1, x[0].numel()).sum(dim=(0, 2))
            self.layers.append(HookedConv(name, role, flops, x[0].numel(), spikes))

        return record

    def counted(self) -> list[HookedConv]:
        return counted_layers(self.layers, self.mode)

    def flops(self) -> int:
        return sum(layer.flops for layer in self.counted())

    def layer_spikes(self) -> torch.Tensor:
        """[B, L] on the head's device: the spikes into each of the L spiking convs (all but the stem), in the order
        they ran, as an exported head's graph returns them (shared/onnx_head.py)."""
        spiking = [layer for layer in self.layers if layer.role is not ConvRole.STEM]
        counts = [layer.spikes for layer in spiking if layer.spikes is not None]
        if not counts or len(counts) < len(spiking):
            raise RuntimeError("no spikes were recorded: run a real (non-meta) forward inside the monitor")
        return torch.stack(counts, dim=1)

    def estimates(self) -> list[EnergyEstimate]:
        # one copy of all the counts to the CPU, where shared/energy.py does its float64 arithmetic
        layer_spikes = self.layer_spikes().double().numpy(force=True)  # [B, L]
        return estimate_energy(self.layers, layer_spikes, self.time_steps, self.mode)


def structural_flops(head: nn.Module, time_steps: int, image_size: int, mode: CountMode = CountMode.PAPER) -> int:
    """FLOPs of a head's counted layers from its structure alone: a forward on the meta device.

    ``head`` may be built on the meta device (``with torch.device("meta"): SplitHead(cfg)``), so
    even a full-width backbone costs no memory and no arithmetic.
    """
    device = next(head.parameters()).device
    was_training = head.training
    head.eval()  # a real head in train mode would otherwise fold the dummy batch into its BN statistics
    try:
        with ActivityMonitor(head, time_steps, mode) as monitor, torch.no_grad():
            head(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        head.train(was_training)
    return monitor.flops()
