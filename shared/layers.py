"""Reusable spiking layers: time folding, conv-tdBN-LIF units (the tdBN itself: shared/td_batch_norm.py).

Every tensor that flows between layers is shaped [T, B, C, H, W]. Stateless layers (conv,
transposed conv) see no difference between time steps, so they run once on [T*B, C, H, W]
("folding T into the batch"), which is both simpler and faster than looping over T.

Folding makes the batch a conv sees depend on T and on how many requests ride together, and torch
picks a conv algorithm by batch size (its native loop for a lone small input, oneDNN otherwise),
whose results differ in the last bits. The spiking convs therefore pick one themselves in inference
(``SpikeConv2d``, ``SpikeConvTranspose2d``): an algorithm whose result for a sample does not depend on
the batch around it, so a network run one step at a time (shared/neuron.py's ``stepping``) gives the
multi-step run's spikes bit for bit, and so does a request batched with others.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

import torch
from torch import nn

from .conv_autograd import ChannelsLastBackwardConv2d, FusedTrainingConv, trains_channels_last
from .energy import ConvRole, declare_role
from .lif_config import LIFConfig
from .neuron import LIF, Stateful
from .td_batch_norm import TdBatchNorm


def _batch_invariant_inference(x: torch.Tensor) -> bool:
    """Whether a conv on ``x`` takes the batch-invariant path: inference (no autograd) on CPU float32."""
    return not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32


class SpikeConv2d(FusedTrainingConv, nn.Conv2d):
    """nn.Conv2d whose inference result for a sample does not depend on its batch. A pointwise conv (1x1, stride
    1, one group) always takes torch's native loop (one GEMM per sample; single-threaded, torch's own pick for it
    below 16 images, and the faster one), every other conv oneDNN (``torch.mkldnn_convolution``; torch's pick
    for more than one image), where torch's own choice switches between them with the batch size.

    In training on the CPU its backward runs in channels-last layout (shared/conv_autograd.py), the forward
    unchanged, unless ``fused_training`` is off (shared/neuron.py's ``use_fused_training``)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # the batch-invariant kernels take a padding in numbers: "same" or "valid" is F.conv2d's to resolve
        numeric_zero_padding = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        if self.fused_training and numeric_zero_padding and trains_channels_last(input, weight):
            return ChannelsLastBackwardConv2d.apply(
                input, weight, bias, self.stride, self.padding, self.dilation, self.groups
            )
        if (
            _batch_invariant_inference(input)
            and self.padding_mode == "zeros"
            and self.dilation == (1, 1)
            and not isinstance(self.padding, str)
        ):
            if self.kernel_size == (1, 1) and self.stride == (1, 1) and self.groups == 1:
                return torch.ops.aten._slow_conv2d_forward(
                    input, weight, self.kernel_size, bias, self.stride, self.padding
                )
            if torch.backends.mkldnn.is_available():
                return torch.mkldnn_convolution(
                    input, weight, bias, self.padding, self.stride, self.dilation, self.groups
                )
        return super()._conv_forward(input, weight, bias)


class SpikeConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d whose inference result for a sample does not depend on its batch: always torch's
    native loop (``slow_conv_transpose2d``, one GEMM per sample), where torch would take oneDNN for some."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if _batch_invariant_inference(input) and output_size is None and self.groups == 1:
            return torch.ops.aten.slow_conv_transpose2d(
                input,
                self.weight,
                self.kernel_size,
                self.bias,
                self.stride,
                self.padding,
                self.output_padding,
                self.dilation,
            )
        return super().forward(input, output_size)


Folded = TypeVar("Folded", bound=nn.Module)


class TimeFolded(nn.Module, Generic[Folded]):
    """Apply a stateless module to [T, B, ...] by folding T into the batch dimension."""

    def __init__(self, module: Folded) -> None:
        super().__init__()
        self.module: Folded = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = self.module(x.flatten(0, 1))  # [T*B, ...]
        return y.unflatten(0, (t, b))  # [T, B, ...]


RESIDUAL_ALPHA = 1 / math.sqrt(2)

# Initial tdBN scale (lambda) of the last layer of every residual branch, in every backbone: each
# block starts close to its shortcut (timm's zero_init_last, adapted to spikes). With residual
# branches at full scale a deep spiking net is chaotic: the Spike ResNet50's 16 thresholded blocks
# scramble the input (at init a linear probe on RB13 spikes of the digits is at chance; a 1e-4 change
# of the stem weights flips a third of RB16's spikes), the surrogate gradient cannot follow, and
# training stalls. A small scale keeps each block's output close to its input spikes (the same change
# then flips under 1% of RB16's spikes). Not exactly zero: then u sits at 0 or 1, on the edge of the
# surrogate window (|u - v_th| < a/2), and no gradient flows.
RESIDUAL_BN_INIT = 0.2


class ConvBN(nn.Module):
    """Conv2d (time-folded) -> tdBN. The pre-activation of a spiking layer.

    ``groups`` = channels makes it depthwise. ``role`` tells the energy accounting what the conv is
    (shared/energy.py): a backbone declares it where it builds the layer.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int,
        lif: LIFConfig,
        *,
        role: ConvRole,
        alpha: float = 1.0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        conv = SpikeConv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)
        self.conv = TimeFolded(declare_role(conv, role))
        self.bn = TdBatchNorm(out_ch, lif.v_th, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ConvBNLIF(ConvBN):
    """Conv2d -> tdBN -> LIF: spikes in, spikes out."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int, lif: LIFConfig, *, role: ConvRole, groups: int = 1
    ) -> None:
        super().__init__(in_ch, out_ch, kernel_size, stride, lif, role=role, groups=groups)
        self.lif = LIF(lif, inplace=True)  # its input is the conv's output, read by nothing else

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.conv(x), self.bn)  # the LIF applies the tdBN: folded into its pass in inference


class DirectEncodingStem(Stateful):
    """Direct input encoding: the static image repeated T times into conv -> tdBN -> LIF.

    The first conv is linear and sees the same image at every step, so it runs once on
    [B, 3, H, W] and its output is repeated over T; the result is identical to convolving
    the repeated image, at 1/T of the cost. Single-step, it runs at the first step and is kept
    in the StepState for the steps after.
    """

    def __init__(self, out_ch: int, lif: LIFConfig, in_ch: int = 3) -> None:
        super().__init__()
        self.conv = declare_role(nn.Conv2d(in_ch, out_ch, 3, 1, padding=1, bias=False), ConvRole.STEM)
        self.bn = TdBatchNorm(out_ch, lif.v_th)
        # not in place: its input is the conv's output repeated over T, kept for the later steps when streaming
        self.lif = LIF(lif)

    def forward(self, image: torch.Tensor, time_steps: int) -> torch.Tensor:
        # image: [B, 3, H, W] -> spikes [T, B, C, H, W]
        features = None if self.step_state is None else self.step_state.get(self)
        if features is None:
            features = self.conv(image)  # [B, C, H, W]
            if self.step_state is not None:
                self.step_state.put(self, features)
        return self.lif(features.unsqueeze(0).expand(time_steps, -1, -1, -1, -1), self.bn)


class SpikeRateClassifier(Stateful):
    """Global average pool over space, mean over time, linear: spikes [T, B, C, H, W] -> logits [B, K].

    Single-step (inside ``stepping``), it keeps the running sum over the steps so far and answers the
    logits of their mean: after T steps, those of the multi-step call, bit for bit (the mean over T is
    a float32 sum in step order, then a division by T, either way).
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rate = x.mean(dim=(3, 4))  # [T, B, C]
        if self.step_state is None:
            return self.fc(rate.mean(dim=0))
        total, steps = self.step_state.get(self) or (None, 0)
        for t in range(rate.shape[0]):
            total = rate[t] if total is None else total + rate[t]  # [B, C]
        assert total is not None  # x has at least one time step, so the loop has started the sum
        steps += rate.shape[0]
        self.step_state.put(self, (total, steps))
        return self.fc(total / steps)
