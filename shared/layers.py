"""Reusable spiking layers: time folding, threshold-dependent BN (tdBN), conv-tdBN-LIF units.

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

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .energy import ConvRole, declare_role
from .lif_kernel import ChannelAffine
from .neuron import LIF, LIFConfig, Stateful


def _batch_invariant_inference(x: torch.Tensor) -> bool:
    """Whether a conv on ``x`` takes the batch-invariant path: inference (no autograd) on CPU float32."""
    return not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32


class SpikeConv2d(nn.Conv2d):
    """nn.Conv2d whose inference result for a sample does not depend on its batch. A pointwise conv (1x1, stride
    1, one group) always takes torch's native loop (one GEMM per sample; single-threaded, torch's own pick for it
    below 16 images, and the faster one), every other conv oneDNN (``torch.mkldnn_convolution``; torch's pick
    for more than one image), where torch's own choice switches between them with the batch size."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if _batch_invariant_inference(input) and self.padding_mode == "zeros" and self.dilation == (1, 1):
            if self.kernel_size == (1, 1) and self.stride == (1, 1) and self.groups == 1:
                return torch.ops.aten._slow_conv2d_forward(input, weight, self.kernel_size, bias, self.stride,
                                                           self.padding)
            if torch.backends.mkldnn.is_available():
                return torch.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation,
                                                self.groups)
        return super()._conv_forward(input, weight, bias)


class SpikeConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d whose inference result for a sample does not depend on its batch: always torch's
    native loop (``slow_conv_transpose2d``, one GEMM per sample), where torch would take oneDNN for some."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if _batch_invariant_inference(input) and output_size is None and self.groups == 1:
            return torch.ops.aten.slow_conv_transpose2d(input, self.weight, self.kernel_size, self.bias, self.stride,
                                                        self.padding, self.output_padding, self.dilation)
        return super().forward(input, output_size)


class TimeFolded(nn.Module):
    """Apply a stateless module to [T, B, ...] by folding T into the batch dimension."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = self.module(x.flatten(0, 1))  # [T*B, ...]
        return y.unflatten(0, (t, b))  # [T, B, ...]


class TdBatchNorm(nn.BatchNorm2d):
    """Threshold-dependent batch norm (Zheng et al., 2021).

    Per channel, statistics are taken over T, B, H and W together, and the normalized value is
    scaled to the firing threshold: y = lambda * (alpha * v_th * (x - mean) / sqrt(var + eps)) + beta.
    ``lambda`` and ``beta`` are BN's affine weight and bias; ``alpha`` is 1, or 1/sqrt(2) for
    the two branches that are summed before a residual LIF, so their sum keeps unit variance.
    """

    def __init__(self, channels: int, v_th: float, alpha: float = 1.0, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        self.alpha, self.v_th = alpha, v_th
        # inference_affine's last result, and the (tensor, version) pairs it was computed from
        self._affine: tuple[list[tuple[torch.Tensor, int]], ChannelAffine] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, B, C, H, W]; BatchNorm2d over [T*B, C, H, W] reduces over T, B, H, W per channel
        t, b = x.shape[:2]
        # As nn.BatchNorm2d.forward does (calling F.batch_norm directly bypasses it): count the
        # batches, and momentum=None means a cumulative average over them.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            # F.batch_norm updates the running statistics in place without bumping their versions
            self._affine = None
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        y = F.batch_norm(
            x.flatten(0, 1),
            self.running_mean,
            self.running_var,
            self.scaled_weight(),
            self.bias,
            self.training,
            momentum,
            self.eps,
        )
        return y.unflatten(0, (t, b))

    def scaled_weight(self) -> torch.Tensor:
        """lambda * alpha * v_th: BN's weight scaled, so that one batch-norm kernel does the whole formula."""
        return self.weight * (self.alpha * self.v_th)

    def inference_affine(self) -> ChannelAffine | None:
        """This tdBN in eval mode as the per-channel map x * scale + shift, rounded exactly as its
        ``forward`` (F.batch_norm on CPU float32) rounds it, so that the LIF's fused pass reproduces
        its output bit for bit. None in training mode (batch statistics, running ones to update) or
        where F.batch_norm's rounding is not known (``batch_norm_rounds_once``)."""
        rounded_once = batch_norm_rounds_once()
        if self.training or rounded_once is None:
            return None
        # Kept while the tensors it is computed from stay the same: a few small tensor operations per
        # call add up to milliseconds per forward of a deep net. An in-place update of one (an
        # optimizer step, load_state_dict) bumps its version, .to() replaces it, and a train-mode
        # forward, which updates the running statistics without a version bump, drops the kept map.
        sources = [(t, t._version) for t in (self.weight, self.bias, self.running_mean, self.running_var)]
        if self._affine is not None and all(
                kept is t and kept_version == version
                for (kept, kept_version), (t, version) in zip(self._affine[0], sources, strict=True)):
            return self._affine[1]
        with torch.no_grad():
            weight = self.scaled_weight()
            # ATen's CPU kernel (batch_norm_cpu_collect_linear_and_constant_terms) takes scale = invstd * weight,
            # invstd = 1 / sqrt(running_var + eps), and shift = bias - running_mean * scale. Both are asked of
            # the kernel itself rather than recomputed: torch.sqrt on CPU float32 is MKL's vector square root,
            # which is not correctly rounded and differs with the code path MKL picks for the CPU (torch 2.13,
            # random variances: an ulp off for 0.7 % of them with AVX-512, 17 % with SSE4.2, none with AVX2;
            # MKL_ENABLE_INSTRUCTIONS=SSE4_2 reproduces the failures first seen on an AMD EPYC), while the
            # kernel's own square root is exact. With mean 0 and bias 0 the shift is 0, and the output at
            # x = 1 is the scale, rounded once or twice alike ...
            ones = torch.ones(1, self.num_features, 1, 1, dtype=weight.dtype, device=weight.device)  # [1, C, 1, 1]
            origin = torch.zeros_like(self.running_mean)  # [C]
            scale = F.batch_norm(ones, origin, self.running_var, weight, origin, False, 0.0, self.eps)
            # ... and with the running mean and the bias, the output at x = 0 is the shift
            shift = F.batch_norm(torch.zeros_like(ones), self.running_mean, self.running_var, weight, self.bias, False,
                                 0.0, self.eps)
        self._affine = sources, ChannelAffine(scale.flatten(), shift.flatten(), rounded_once)
        return self._affine[1]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha:.4g}, v_th={self.v_th}"


@functools.cache
def batch_norm_rounds_once() -> bool | None:
    """How F.batch_norm in eval (CPU float32) rounds its per-channel map x * scale + shift.

    True: once, a fused multiply-add; False: after the multiply and again after the add; None: as
    neither. ATen writes x * scale + shift, and whether the compiler contracted it into an FMA
    depends on which build of the kernel this CPU runs (AVX2 and AVX-512: once; the DEFAULT build:
    twice, e.g. with ATEN_CPU_CAPABILITY=default), so it is asked, not assumed: with x = scale =
    1 + 2^-12 and shift = -1, x * scale = 1 + 2^-11 + 2^-24 is a float32 tie that rounds to 1 + 2^-11,
    so rounding twice gives 2^-11 and rounding once 2^-11 + 2^-24.
    """
    tap = 1 + 2**-12
    # [N, C, H, W] = [2, 1, 5, 7]: rows of 35, longer than a vector register and with a remainder, so
    # both the vectorized loop and its tail answer
    x = torch.full((2, 1, 5, 7), tap)
    # running mean 0, running var 1 and eps 0 make scale = weight and shift = bias
    y = F.batch_norm(x, torch.zeros(1), torch.ones(1), torch.full((1,), tap), torch.full((1,), -1.0), False, 0.0, 0.0)
    if (y == 2**-11 + 2**-24).all():
        return True
    if (y == 2**-11).all():
        return False
    return None


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

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, lif: LIFConfig, *,
                 role: ConvRole, alpha: float = 1.0, groups: int = 1) -> None:
        super().__init__()
        conv = SpikeConv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)
        self.conv = TimeFolded(declare_role(conv, role))
        self.bn = TdBatchNorm(out_ch, lif.v_th, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ConvBNLIF(ConvBN):
    """Conv2d -> tdBN -> LIF: spikes in, spikes out."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, lif: LIFConfig, *,
                 role: ConvRole, groups: int = 1) -> None:
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
        steps += rate.shape[0]
        self.step_state.put(self, (total, steps))
        return self.fc(total / steps)
