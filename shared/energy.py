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

This module is the arithmetic, in numpy float64, and imports no torch: a device that runs its head without
torch (an exported head, shared/onnx_head.py) estimates its energy from the spike counts its graph returns.
What counts a torch head's spikes and FLOPs as it runs (``ActivityMonitor``, ``structural_flops``) is
shared/activity_monitor.py.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass
from enum import Enum
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
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
    """Mark ``conv`` with its role for ActivityMonitor (shared/activity_monitor.py); returns it, so it can wrap a
    constructor call."""
    setattr(conv, ROLE_ATTRIBUTE, ConvRole(role))
    return conv


def is_counted(role: ConvRole, mode: CountMode) -> bool:
    return mode is CountMode.COMPLETE or role is ConvRole.BLOCK


@dataclass
class ConvLayer:
    """One conv of a head as the energy accounting sees it: a row of an exported head's energy table."""

    name: str
    role: ConvRole
    flops: int  # MACs per image per time step
    input_neurons: int  # C * H * W of the input, per image per time step


Layer = TypeVar("Layer", bound=ConvLayer)


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


def counted_layers(layers: Sequence[Layer], mode: CountMode) -> list[Layer]:
    return [layer for layer in layers if is_counted(layer.role, mode)]


def estimate_energy(
    layers: Sequence[ConvLayer], layer_spikes: np.ndarray, time_steps: int, mode: CountMode
) -> list[EnergyEstimate]:
    """One EnergyEstimate per image from what each conv of a head did. ``layers``: every conv of the head, in the
    order they ran; ``layer_spikes`` [B, L]: the spikes into each of its L spiking convs (every conv but the stem)
    over all T, in the same order, as ActivityMonitor's hooks count them (shared/activity_monitor.py) and an
    exported head's graph returns them (shared/onnx_head.py)."""
    mode = CountMode(mode)
    spiking = [layer for layer in layers if layer.role is not ConvRole.STEM]
    layer_spikes = np.asarray(layer_spikes, dtype=np.float64)  # [B, L]; counts of at most 2^53 convert exactly
    if layer_spikes.ndim != 2 or layer_spikes.shape[1] != len(spiking):
        raise ValueError(
            f"layer_spikes of shape {layer_spikes.shape}: expected [B, {len(spiking)}], one column per spiking conv"
        )
    counted = counted_layers(layers, mode)
    # each counted spiking conv with its spikes [B]
    recorded = [(layer, layer_spikes[:, i]) for i, layer in enumerate(spiking) if is_counted(layer.role, mode)]
    if not recorded:
        raise ValueError(f"no spiking conv of this head counts in {mode.value} mode")
    flops = sum(layer.flops for layer in counted)
    mac_flops = sum(layer.flops for layer in counted if layer.role is ConvRole.STEM)  # real-valued input
    # [B]: per image, summed over the layers (functools.reduce, not sum(), whose start of 0 would type the sum as an
    # int too): SyOPs_l = fr_l * T * FLOPs_l = spikes_l / neurons_l * FLOPs_l
    syops = functools.reduce(operator.add, (spikes * layer.flops / layer.input_neurons for layer, spikes in recorded))
    spikes = functools.reduce(operator.add, (spikes for _, spikes in recorded))  # [B]
    neuron_steps = time_steps * sum(layer.input_neurons for layer, _ in recorded)
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
