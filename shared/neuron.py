"""Leaky integrate-and-fire neuron with a rectangular surrogate gradient.

The neuron follows the iterative LIF form of Wu et al. (STBP) used by the paper:

    u[t] = tau * u[t-1] * (1 - s[t-1]) + I[t]      (charge; the (1 - s) factor is a hard reset to 0)
    s[t] = 1 if u[t] >= v_th else 0                  (fire)

Here ``tau`` is the decay factor (0.25 by default) and ``v_th`` the firing threshold (0.5).
The Heaviside step has no useful derivative, so the backward pass uses the paper's Eq. 6:

    ds/du = (1/a) * 1[|u - v_th| < a/2]

As in SpikingJelly, the neuron is split into charge / fire / reset steps and runs in an
explicit multi-step mode over tensors shaped [T, B, ...]. That step-by-step loop is the reference;
inference without autograd runs the same arithmetic as one compiled pass (shared/lif_kernel.py),
with the tdBN and residual add before the neuron folded in, and training on CPU runs it as autograd
Functions (shared/lif_autograd.py) whose spikes are the reference's bit for bit and whose gradients
are the ones autograd takes through it.

The single-step mode (SpikingJelly's ``step_mode='s'``) runs a network one time step per call, for
streaming: inside ``stepping(model, state)`` every LIF starts each call from the membrane potential
its last call left in ``state`` (a ``StepState``, one per stream; a fresh one is the reset) and
leaves its new one there, so T calls of one step each give, bit for bit, the spikes of one call of
T steps.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .conv_autograd import FusedTrainingConv
from .lif_autograd import lif_norm_train, lif_train, norm_trains_in_kernel, trains_in_kernel
from .lif_config import LIFConfig
from .lif_kernel import lif_pass, runs_in_kernel
from .td_batch_norm import TdBatchNorm


class RectangularSpike(torch.autograd.Function):
    """Heaviside forward, rectangular surrogate backward (paper Eq. 6)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, v_th: float, width: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.v_th, ctx.width = v_th, width
        return (u >= v_th).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_spike: torch.Tensor):
        (u,) = ctx.saved_tensors
        window = (u - ctx.v_th).abs() < ctx.width / 2
        return grad_spike * window.to(grad_spike.dtype) / ctx.width, None, None


class SurrogateSpike(nn.Module):
    """Module wrapper so the surrogate is visible (and swappable) in the model tree."""

    def __init__(self, v_th: float, width: float) -> None:
        super().__init__()
        self.v_th, self.width = v_th, width

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return RectangularSpike.apply(u, self.v_th, self.width)

    def extra_repr(self) -> str:
        return f"v_th={self.v_th}, width={self.width}"


class StepState:
    """What a network run one time step per call carries from one call to the next: each stateful module's
    state (a LIF's membrane potential, a rate classifier's running sum), keyed by the module. One per stream
    of time steps; a new one is the network at rest."""

    def __init__(self) -> None:
        self._values: dict[nn.Module, Any] = {}

    def get(self, module: nn.Module) -> Any:
        """``module``'s state after its last step, None before its first."""
        return self._values.get(module)

    def put(self, module: nn.Module, value: Any) -> None:
        self._values[module] = value


class Stateful(nn.Module):
    """A module with state across time steps: multi-step by default, single-step inside ``stepping``."""

    step_state: StepState | None = None  # set by ``stepping``: the state this call starts from and updates


_STATEFUL: weakref.WeakKeyDictionary[nn.Module, list[Stateful]] = weakref.WeakKeyDictionary()


@contextmanager
def stepping(model: nn.Module, state: StepState) -> Iterator[None]:
    """Within the block, every stateful module of ``model`` runs single-step: each call continues from ``state``.
    The modules themselves hold no state, so one model serves many streams, one call at a time."""
    modules = _STATEFUL.get(model)
    if modules is None:  # once per model: walking a deep module tree costs more than a narrow model's step
        modules = _STATEFUL[model] = [m for m in model.modules() if isinstance(m, Stateful)]
    for module in modules:
        module.step_state = state
    try:
        yield
    finally:
        for module in modules:
            module.step_state = None


class LIF(Stateful):
    """Multi-step LIF: input current [T, B, ...] -> binary spikes [T, B, ...].

    The membrane state lives only inside one forward call (each input is a fresh sample),
    so there is nothing to reset between calls; inside ``stepping`` it carries over from the
    call before instead, through the StepState.

    The current may be given in parts, ``norm(x) + shortcut``: the tdBN before the neuron and a
    residual shortcut added to its output. Without autograd (``torch.no_grad`` or
    ``torch.inference_mode``) on CPU float32, with ``norm`` in eval mode, the whole of it runs as one
    compiled pass (shared/lif_kernel.py) whose spikes are bitwise those of the step-by-step reference.
    With autograd on CPU float32 (training), the T steps run as one autograd Function, and a train-mode
    ``norm`` and the shortcut with them (shared/lif_autograd.py): the same spikes, running statistics
    and gradients (those through the tdBN up to its backward's order of summation). Otherwise (another
    device or dtype, single-step under autograd), or with ``fused_inference`` or ``fused_training`` off
    (``use_fused_inference``, ``use_fused_training``), the parts run as modules and tensor operations, and
    the T steps one by one: the reference.

    Spikes carry gradients as float32 under autograd. Without it they come as ``inference_dtype``: float32,
    what the next convolution takes, or bool (one byte per spike) for the bottleneck encoder's LIF, whose
    spikes go to the codec, which packs bools as they are.

    ``inplace`` (as in ``nn.ReLU(inplace=True)``): the fused pass writes float32 spikes over its input x
    instead of into a new tensor, for a caller whose x is a conv's fresh output that nothing else reads.
    That spares allocating the spikes and, the larger part, streaming a second tensor of their size
    through the caches: the LIF modules of a full-width Spike ResNet50 take about 40 % less time. The
    step-by-step path never writes in place.
    """

    step_mode = "m"  # multi-step: the whole time axis is processed in one call

    def __init__(
        self, config: LIFConfig = LIFConfig(), inference_dtype: torch.dtype = torch.float32, inplace: bool = False
    ) -> None:
        super().__init__()
        if inference_dtype not in (torch.float32, torch.bool):
            raise ValueError(f"a LIF emits float32 or bool spikes, not {inference_dtype}")
        self.tau = config.tau
        self.v_th = config.v_th
        self.inference_dtype = inference_dtype
        self.inplace = inplace
        self.spike_fn = SurrogateSpike(config.v_th, config.surrogate_width)
        self.fused_inference = True  # False: always the step-by-step path (use_fused_inference)
        self.fused_training = True  # False: autograd through the step-by-step path (use_fused_training)
        self.fused_training_norm = True  # False: the fused training Function without the tdBN (use_fused_training)

    def charge(self, u: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        return self.tau * u + current

    def fire(self, u: torch.Tensor) -> torch.Tensor:
        return self.spike_fn(u)

    def reset(self, u: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
        # hard reset to 0; differentiable in u so gradients also flow through time
        return u * (1.0 - spike)

    def forward(
        self, x: torch.Tensor, norm: TdBatchNorm | None = None, shortcut: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x: [T, B, ...], [T, B, C, ...] with a norm; the input current is norm(x) + shortcut
        if self.fused_inference and not torch.is_grad_enabled() and runs_in_kernel(x, shortcut):
            affine = None if norm is None else norm.inference_affine()
            if norm is None or affine is not None:
                membrane = None if self.step_state is None else self.step_state.get(self)
                if self.step_state is not None and membrane is None:
                    # at rest; the pass leaves the potentials after its steps in it
                    membrane = torch.zeros(x.shape[1:], dtype=torch.float32)
                    self.step_state.put(self, membrane)
                return lif_pass(x, self.tau, self.v_th, affine, shortcut, membrane, self.inference_dtype, self.inplace)
        # autograd on: the fused training Functions (shared/lif_autograd.py), the train-mode tdBN in them if it may
        fused_training = self.fused_training and torch.is_grad_enabled() and self.step_state is None
        if fused_training and self.fused_training_norm and norm_trains_in_kernel(norm, x, shortcut):
            return lif_norm_train(x, norm, shortcut, self.tau, self.v_th, self.spike_fn.width)
        current = x if norm is None else norm(x)
        if shortcut is not None:
            current = current + shortcut
        if fused_training and trains_in_kernel(current):
            return lif_train(current, self.tau, self.v_th, self.spike_fn.width)
        if self.step_state is None:
            spikes = self.step_by_step(current)[0]
        else:
            spikes, membrane = self.step_by_step(current, self.step_state.get(self))
            self.step_state.put(self, membrane)
        return spikes if torch.is_grad_enabled() else spikes.to(self.inference_dtype)

    def step_by_step(
        self, current: torch.Tensor, membrane: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes [T, B, ...] for the current [T, B, ...], starting from ``membrane`` [B, ...] (None: at rest),
        and the membrane after the last step."""
        u = torch.zeros_like(current[0]) if membrane is None else membrane
        spikes = []
        for t in range(current.shape[0]):
            u = self.charge(u, current[t])
            s = self.fire(u)
            u = self.reset(u, s)
            spikes.append(s)
        return torch.stack(spikes), u  # [T, B, ...], values in {0, 1}; [B, ...]

    def extra_repr(self) -> str:
        dtype = "" if self.inference_dtype == torch.float32 else f", inference_dtype={self.inference_dtype}"
        return f"tau={self.tau}, v_th={self.v_th}, step_mode={self.step_mode}{dtype}{', inplace' * self.inplace}"


def use_fused_inference(model: nn.Module, enabled: bool) -> None:
    """Switch every LIF of ``model`` between the fused inference pass and the step-by-step reference."""
    for module in model.modules():
        if isinstance(module, LIF):
            module.fused_inference = enabled


def use_fused_training(model: nn.Module, enabled: bool, norm: bool = True) -> None:
    """Switch every LIF of ``model`` between the fused training Functions (shared/lif_autograd.py) and autograd
    through the step-by-step reference. ``norm`` False: the fused LIF leaves the train-mode tdBN before it to
    the module, and the convs keep autograd's own backward (for comparisons); True: the convs' backward runs in
    channels-last layout (shared/conv_autograd.py)."""
    for module in model.modules():
        if isinstance(module, LIF):
            module.fused_training = enabled
            module.fused_training_norm = norm
        elif isinstance(module, FusedTrainingConv):
            module.fused_training = enabled and norm
