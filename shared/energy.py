"""Energy accounting from measured spikes (paper section 4.3, Eq. 7-8).

For every conv layer l the device runs, per image:

    FLOPs_l = (output elements of one time step) * (C_in / groups) * k_h * k_w      (multiply-accumulates)
    fr_l    = spikes into l / (T * neurons of l's input)                              (firing rate)
    SyOPs_l = fr_l * T * FLOPs_l                                                      (accumulates actually done)

    SNN, 45 nm:  E = 0.9 pJ * sum SyOPs        ROLLS chip: E = 77 fJ * sum SyOPs
    ANN baseline (the same layers in a conventional network, BottleNet++ style): E = 4.6 pJ * sum FLOPs

Which layers count: ``paper`` mode counts, as the paper does, only the convs inside the blocks up to
the split point (ResNet: the three convs of each residual block; MobileNet: expand, depthwise and
project). ``complete`` mode adds the stem conv (real-valued input, so MACs at 4.6 pJ, computed once
since the input is the same at every step), the down-sampling shortcut convs and the encoder conv
(both on spikes, so SyOPs). Each conv's role is declared where a backbone builds it
(``declare_role``), never guessed from its name, and the monitor refuses a conv without one.
Depthwise and grouped convs count C_in / groups inputs per output. FLOPs come from the modules'
shapes as the model runs; nothing is tabulated per layer. On the meta device the same walk gives
FLOPs without computing anything (``structural_flops``).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass, field
from enum import Enum

import torch
from torch import nn

E_MAC_45NM_PJ = 4.6
E_AC_45NM_PJ = 0.9
E_SYOP_ROLLS_PJ = 0.077
PJ_PER_MJ = 1e9


class CountMode(str, Enum):
    PAPER = "paper"
    COMPLETE = "complete"


class ConvRole(str, Enum):
    """What a conv is to the energy accounting; declared by whoever builds it."""

    STEM = "stem"  # the first conv, on the real-valued image: MACs
    BLOCK = "block"  # inside a backbone block: the layers the paper counts
    SHORTCUT = "shortcut"  # a down-sampling shortcut's 1x1 conv
    ENCODER = "encoder"  # the bottleneck encoder
    CLASSIFIER = "classifier"  # a conv of the classifier (tail side, e.g. MobileNet's 1x1 to 1280)


ROLE_ATTRIBUTE = "energy_role"


def declare_role(conv: nn.Conv2d, role: ConvRole) -> nn.Conv2d:
    """Mark ``conv`` with its role for ActivityMonitor; returns it, so it can wrap a constructor call."""
    setattr(conv, ROLE_ATTRIBUTE, ConvRole(role))
    return conv


def is_counted(role: ConvRole, mode: CountMode) -> bool:
    return mode is CountMode.COMPLETE or role is ConvRole.BLOCK


@dataclass
class ConvActivity:
    """One conv layer in one forward pass."""

    name: str
    role: ConvRole
    flops: int  # MACs per image per time step
    input_neurons: int  # C * H * W of the input, per image per time step
    spikes: torch.Tensor | None = None  # [B] spikes into the layer over all T; None for the stem / meta


@dataclass(frozen=True)
class EnergyEstimate:
    """Per-image device energy of one forward pass, in the units of the /classify response."""

    flops: int  # ANN-equivalent MACs of the counted layers
    syops: float  # synaptic operations on spikes
    firing_rate: float  # spikes / (T * neurons) over the counted spiking layers' inputs
    device_45nm_mj: float
    device_rolls_mj: float
    ann_baseline_45nm_mj: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def mean(cls, estimates: Sequence[EnergyEstimate]) -> EnergyEstimate:
        """Field by field average over images (FLOPs are structural: the same for every image)."""
        if not estimates:
            raise ValueError("no estimates to average")
        columns = zip(*(astuple(e) for e in estimates), strict=True)
        flops, *rest = (sum(column) / len(estimates) for column in columns)
        return cls(round(flops), *rest)

    @classmethod
    def over_steps(cls, steps: Sequence[EnergyEstimate]) -> EnergyEstimate:
        """One image's energy when its head ran one time step per call (streaming): the spikes' operations and
        energies add up over the steps run, the firing rate is their mean (every step has the same neurons), and
        the ANN baseline stays one pass of the same layers, which the first step's figures are (it ran the stem)."""
        if not steps:
            raise ValueError("no steps to add up")
        first = steps[0]
        return cls(
            flops=first.flops,
            syops=sum(s.syops for s in steps),
            firing_rate=sum(s.firing_rate for s in steps) / len(steps),
            device_45nm_mj=sum(s.device_45nm_mj for s in steps),
            device_rolls_mj=sum(s.device_rolls_mj for s in steps),
            ann_baseline_45nm_mj=first.ann_baseline_45nm_mj,
        )


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
    layers: list[ConvActivity] = field(default_factory=list)

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
            self.layers.append(ConvActivity(name, role, flops, x[0].numel(), spikes))

        return record

    def counted(self) -> list[ConvActivity]:
        return counted_layers(self.layers, self.mode)

    def flops(self) -> int:
        return sum(layer.flops for layer in self.counted())

    def estimates(self) -> list[EnergyEstimate]:
        return estimate_energy(self.layers, self.time_steps, self.mode)


def counted_layers(layers: Sequence[ConvActivity], mode: CountMode) -> list[ConvActivity]:
    return [layer for layer in layers if is_counted(layer.role, mode)]


def estimate_energy(layers: Sequence[ConvActivity], time_steps: int, mode: CountMode) -> list[EnergyEstimate]:
    """One EnergyEstimate per image from what each conv of a head did: ``layers`` in the order they ran, every
    spiking one with its spikes [B] recorded (by ActivityMonitor's hooks, or counted by an exported head's graph:
    shared/onnx_head.py)."""
    layers = counted_layers(layers, CountMode(mode))
    spiking = [layer for layer in layers if layer.role is not ConvRole.STEM]
    recorded = [(layer, layer.spikes.double()) for layer in spiking if layer.spikes is not None]
    if not spiking or len(recorded) < len(spiking):
        raise RuntimeError("no spikes were recorded: run a real (non-meta) forward inside the monitor")
    flops = sum(layer.flops for layer in layers)
    mac_flops = sum(layer.flops for layer in layers if layer.role is ConvRole.STEM)  # real-valued input
    # per image, summed over the layers (functools.reduce, not sum(), whose start of 0 would type the sum as an
    # int too): SyOPs_l = fr_l * T * FLOPs_l = spikes_l / neurons_l * FLOPs_l
    syops = functools.reduce(operator.add, (spikes * layer.flops / layer.input_neurons for layer, spikes in recorded))
    spikes = functools.reduce(operator.add, (spikes for _, spikes in recorded))
    neuron_steps = time_steps * sum(layer.input_neurons for layer in spiking)
    out = []
    for b in range(syops.shape[0]):
        s = float(syops[b])
        out.append(
            EnergyEstimate(
                flops=flops,
                syops=s,
                firing_rate=float(spikes[b]) / neuron_steps,
                device_45nm_mj=(s * E_AC_45NM_PJ + mac_flops * E_MAC_45NM_PJ) / PJ_PER_MJ,
                device_rolls_mj=(s * E_SYOP_ROLLS_PJ + mac_flops * E_MAC_45NM_PJ) / PJ_PER_MJ,
                ann_baseline_45nm_mj=flops * E_MAC_45NM_PJ / PJ_PER_MJ,
            )
        )
    return out


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
