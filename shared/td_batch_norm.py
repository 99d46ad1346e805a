"""Threshold-dependent batch norm (tdBN), and how ATen's eval-mode batch norm rounds, which the LIF's fused
passes (shared/lif_kernel.py, shared/lif_autograd.py) must reproduce bit for bit.

Tensors are [T, B, C, H, W], as everywhere between layers.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .lif_kernel import ChannelAffine


class TdBatchNorm(nn.BatchNorm2d):
    """Threshold-dependent batch norm (Zheng et al., 2021).

    Per channel, statistics are taken over T, B, H and W together, and the normalized value is
    scaled to the firing threshold: y = lambda * (alpha * v_th * (x - mean) / sqrt(var + eps)) + beta.
    ``lambda`` and ``beta`` are BN's affine weight and bias; ``alpha`` is 1, or 1/sqrt(2) for
    the two branches that are summed before a residual LIF, so their sum keeps unit variance.
    """

    # Always built with running statistics (BatchNorm's track_running_stats=True), which BatchNorm declares
    # optional
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self, channels: int, v_th: float, alpha: float = 1.0, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
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

    def exact_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This tdBN in eval mode as the per-channel map x * scale + shift, in float64 ([C] each): scale =
        lambda * alpha * v_th / sqrt(running_var + eps), shift = beta - running_mean * scale. For folding into
        the conv before it (shared/nir_head.py), rounded once, where the float32 ``inference_affine`` is rounded
        as the kernel rounds it."""
        with torch.no_grad():
            scale = self.scaled_weight().double() / torch.sqrt(self.running_var.double() + self.eps)
            return scale, self.bias.double() - self.running_mean.double() * scale

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
            for (kept, kept_version), (t, version) in zip(self._affine[0], sources, strict=True)
        ):
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
            shift = F.batch_norm(
                torch.zeros_like(ones), self.running_mean, self.running_var, weight, self.bias, False, 0.0, self.eps
            )
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
