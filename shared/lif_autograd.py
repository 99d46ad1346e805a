"""The multi-step LIF under autograd as autograd Functions: the training path's T-step loop, fused.

The reference (``LIF.step_by_step``) runs each of the T steps as tensor operations (charge, fire, reset,
and a stack at the end), and autograd records every one of them: about a dozen nodes and a dozen
full-size tensors per step, each a pass over memory forward and again backward. ``LIFFunction`` runs the
T steps as one compiled loop forward and one backward (shared/lif_kernel.py) and keeps for the backward
only the potentials before each reset (float32, [T, ...]), where the reference keeps those and more.
Its spikes are bitwise the reference's, and its gradient is the one autograd takes through the
reference's graph, rounded the same way (each step's sums have two terms, which IEEE addition adds the
same in either order).

``LIFNormFunction`` also takes in the train-mode tdBN before the neuron and the residual add: the batch
statistics, the normalization, the add and the T steps in compiled passes, and the tdBN's backward in
them too, keeping only the tdBN's input (which the reference keeps too) and the shortcut. Its
statistics, running statistics and spikes are bitwise those of ``TdBatchNorm.forward`` (F.batch_norm)
and the reference LIF; its gradients are the reference's up to the order of the tdBN backward's
per-channel sums (float64 here; ATen's float32 vector sums added in float64 there), a few float32 ulps.

Both take float32 CPU tensors (``trains_in_kernel``, ``norm_trains_in_kernel``); the LIF runs the
reference elsewhere (CUDA, autocast's float16 and bfloat16, float64).
"""

from __future__ import annotations

import functools
import math
from typing import TypeGuard

import numpy as np
import torch
import torch.nn.functional as F

from .lif_kernel import (
    batch_norm_train_grad_input,
    channel_stats,
    compiled,
    fused_multiply_add,
    lif_norm_train_backward,
    lif_norm_train_forward,
    lif_train_backward,
    lif_train_forward,
)
from .td_batch_norm import TdBatchNorm, batch_norm_rounds_once


def trains_in_kernel(current: torch.Tensor) -> bool:
    """Whether the fused Functions take this tensor: float32 on the CPU, [T, ...] and not empty."""
    return (
        current.device.type == "cpu" and current.dtype == torch.float32 and current.dim() >= 2 and current.numel() > 0
    )


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """``t`` or a copy of it whose memory holds each time step as one dense block, its neurons in any order
    (contiguous, or channels-last as a conv returns it for a channels-last input: taken as it comes)."""
    if t.is_contiguous():
        return t
    step = t[0]  # dense: its dimensions, fastest first, each stride the product of the sizes before
    dense = step.permute(sorted(range(step.dim()), key=step.stride, reverse=True)).is_contiguous()
    return t if dense and t.stride(0) == step.numel() else t.contiguous()


def _rows(t: torch.Tensor) -> np.ndarray:
    """The [T, N] float32 array over ``_time_major`` tensor t's memory, N neurons per step in memory order."""
    steps = t.shape[0]
    return torch.as_strided(t.detach(), (steps, t.numel() // steps), (t.numel() // steps, 1)).numpy()


def _samples(t: torch.Tensor) -> np.ndarray:
    """The [T, B, P] float32 array over contiguous tensor t [T, B, ...]'s memory, P neurons per sample."""
    steps, batch = t.shape[:2]
    neurons = t.numel() // (steps * batch)
    return torch.as_strided(t.detach(), (steps, batch, neurons), (batch * neurons, neurons, 1)).numpy()


def _empty_like_layout(t: torch.Tensor) -> torch.Tensor:
    """An uninitialized tensor with t's shape and strides (t ``_time_major``)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)


def _in_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t with ``like``'s strides (a copy where they differ); both shaped alike, ``like`` ``_time_major``."""
    if t.stride() == like.stride():
        return t
    out = _empty_like_layout(like)
    out.copy_(t)
    return out


class LIFFunction(torch.autograd.Function):
    """current [T, ...] -> spikes [T, ...] of a LIF from rest, with the rectangular surrogate gradient."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, tau: float, v_th: float, width: float) -> torch.Tensor:
        current = _time_major(current.detach())
        spikes = _empty_like_layout(current)
        membrane = _empty_like_layout(current)  # h[t], before each reset: what the backward needs
        lif_train_forward(_rows(current), np.float32(tau), np.float32(v_th), _rows(spikes), _rows(membrane))
        ctx.save_for_backward(membrane)
        ctx.tau, ctx.v_th, ctx.width = tau, v_th, width
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        (membrane,) = ctx.saved_tensors
        grad_spikes = _in_layout(grad_spikes, membrane)
        grad_current = _empty_like_layout(membrane)
        lif_train_backward(
            _rows(grad_spikes),
            _rows(membrane),
            np.float32(ctx.tau),
            np.float32(ctx.v_th),
            np.float32(ctx.width / 2),
            np.float32(ctx.width),
            _rows(grad_current),
        )
        return grad_current, None, None, None


def lif_train(current: torch.Tensor, tau: float, v_th: float, width: float) -> torch.Tensor:
    """Spikes [T, ...] of a LIF from rest for ``current`` [T, ...] (float32, CPU), differentiable."""
    return LIFFunction.apply(current, tau, v_th, width)


# --- the train-mode tdBN taken into the pass ---


@functools.cache
def batch_norm_train_shift_rounds_once() -> bool | None:
    """How F.batch_norm in training (CPU float32, contiguous) rounds its per-channel shift bias - mean * scale.

    True: once (a fused multiply-add, as the compiler may contract ATen's scalar expression); False: after
    the multiply and again after the subtraction; None: as neither. Asked, as ``batch_norm_rounds_once``
    asks about the normalization: x alternates 2^-12 and 2 + 2^-12, so mean = m = 1 + 2^-12, variance 1 and
    (eps negligible) invstd 1 exactly; with weight m and bias 1 the scale is m and the shift 1 - m^2 =
    -(2^-11 + 2^-24) rounded once, -2^-11 twice. The output at x = 2^-12, whose product x * m = 2^-12 + 2^-24
    is exact, is then -2^-12 or -2^-12 + 2^-24.
    """
    tap = 1 + 2**-12
    x = torch.tensor([2**-12, 2 + 2**-12] * 35).view(2, 1, 5, 7)  # rows of 35: vector loop and tail
    y = F.batch_norm(x, torch.zeros(1), torch.ones(1), torch.full((1,), tap), torch.ones(1), True, 0.1, 1e-30)
    low = y.flatten()[::2]
    if (low == -(2**-12)).all():
        return True
    if (low == -(2**-12) + 2**-24).all():
        return False
    return None


@compiled
def train_affine(mean, invstd, weight, bias, shift_rounded_once, scale, shift):
    """ATen's per-channel map of a train-mode batch norm: scale = invstd * weight, shift = bias - mean * scale."""
    for c in range(mean.size):
        scale[c] = invstd[c] * weight[c]
        if shift_rounded_once:
            shift[c] = fused_multiply_add(-mean[c], scale[c], bias[c])
        else:
            shift[c] = bias[c] - mean[c] * scale[c]


@compiled
def batch_norm_update_stats(mean, var_sum, count, momentum, eps, invstd, running_mean, running_var):
    """What ATen's batch_norm_cpu_update_stats_template makes of the float32 statistics, as this torch (2.13,
    CPU) rounds it: invstd = 1 / sqrt(var_sum / N + eps) (the variance in float32, the rest in float64, then
    float32), and the running averages in float32 with m = float32(momentum): m * mean + (1 - m) * running_mean
    rounded after each operation, m * var_sum / (N - 1) + (1 - m) * running_var with its first product fused
    into the addition. ``fused_norm_matches_aten`` checks all of it against F.batch_norm before the LIF uses it."""
    m = np.float32(momentum)
    keep = np.float32(1) - m
    for c in range(mean.size):
        var = var_sum[c] / np.float32(count)
        invstd[c] = np.float32(1.0 / np.sqrt(np.float64(var) + eps))
        running_mean[c] = m * mean[c] + keep * running_mean[c]
        unbiased = var_sum[c] / np.float32(count - 1)
        running_var[c] = fused_multiply_add(m, unbiased, keep * running_var[c])


@compiled
def _apply_affine(x, scale, shift, rounded_once, out):
    """out = x * scale[c] + shift[c] for x [R, C, S], rounded as ``lif_norm_train_forward`` rounds it."""
    rows, channels, size = x.shape
    for r in range(rows):
        for c in range(channels):
            for s in range(size):
                if rounded_once:
                    out[r, c, s] = fused_multiply_add(x[r, c, s], scale[c], shift[c])
                else:
                    out[r, c, s] = x[r, c, s] * scale[c] + shift[c]


@functools.cache
def fused_norm_matches_aten() -> bool:
    """Whether this process's ATen computes a train-mode batch norm as ``lif_norm_train`` does: the statistics,
    running statistics and output of F.batch_norm on random inputs, bit for bit. The arithmetic is ATen's as
    read and measured on torch 2.13 (CPU); elsewhere the LIF leaves the tdBN to its module rather than risk
    other bits."""
    rounded_once, shift_rounded_once = batch_norm_rounds_once(), batch_norm_train_shift_rounds_once()
    if rounded_once is None or shift_rounded_once is None:
        return False
    generator = torch.Generator().manual_seed(0)
    for shape, momentum in (((6, 40, 5, 7), 0.1), ((9, 33, 4, 4), 1 / 3), ((4, 7, 16, 16), 0.37)):
        rows, channels = shape[0], shape[1]
        x = torch.randn(shape, generator=generator) * 3 + 0.4
        weight, bias = torch.rand(channels, generator=generator) + 0.5, torch.randn(channels, generator=generator)
        running_mean = torch.randn(channels, generator=generator)
        running_var = torch.rand(channels, generator=generator) + 0.5
        expected_mean, expected_var = running_mean.clone(), running_var.clone()
        expected = F.batch_norm(x, expected_mean, expected_var, weight, bias, True, momentum, 1e-5)
        mean, var_sum, invstd = (np.empty(channels, np.float32) for _ in range(3))
        channel_stats(x.numpy().reshape(rows, channels, -1), mean, var_sum)
        batch_norm_update_stats(
            mean, var_sum, x.numel() // channels, momentum, 1e-5, invstd, running_mean.numpy(), running_var.numpy()
        )
        scale, shift = np.empty(channels, np.float32), np.empty(channels, np.float32)
        train_affine(mean, invstd, weight.numpy(), bias.numpy(), shift_rounded_once, scale, shift)
        out = torch.empty_like(x)
        _apply_affine(
            x.numpy().reshape(rows, channels, -1), scale, shift, rounded_once, out.numpy().reshape(rows, channels, -1)
        )
        if not (
            torch.equal(out, expected)
            and torch.equal(running_mean, expected_mean)
            and torch.equal(running_var, expected_var)
        ):
            return False
    return True


def norm_trains_in_kernel(
    norm: torch.nn.Module | None, x: torch.Tensor, shortcut: torch.Tensor | None
) -> TypeGuard[TdBatchNorm]:
    """Whether ``lif_norm_train`` takes this tdBN and its input: a train-mode ``TdBatchNorm`` with running
    statistics and an affine map, all float32 on the CPU, x [T, B, C, H, ...] that F.batch_norm would see
    contiguous (so its contiguous kernel is the one to match; a channels-last x takes another), more than one
    neuron per channel and channel per sample (ATen takes [N, C, 1, 1] and [N, 1, H, W] other ways), and an
    ATen that computes as ``fused_norm_matches_aten`` expects."""
    if type(norm) is not TdBatchNorm or not norm.training or not norm.track_running_stats or not norm.affine:
        return False
    if x.dim() < 4 or not trains_in_kernel(x) or x.shape[2] != norm.num_features:
        return False
    if shortcut is not None and (shortcut.shape != x.shape or not trains_in_kernel(shortcut)):
        return False
    if any(
        t.device.type != "cpu" or t.dtype != torch.float32
        for t in (norm.weight, norm.bias, norm.running_mean, norm.running_var)
    ):
        return False
    if x.shape[2] == 1 or math.prod(x.shape[3:]) == 1:
        return False
    # TdBatchNorm.forward hands F.batch_norm x.flatten(0, 1): a view where T and B merge, else a contiguous copy
    # (the stem's one image repeated T times, with stride 0 over T)
    merges = x.shape[0] == 1 or x.shape[1] == 1 or x.stride(0) == x.shape[1] * x.stride(1)
    if merges and not x.is_contiguous():
        return False
    return fused_norm_matches_aten()


class LIFNormFunction(torch.autograd.Function):
    """x, the tdBN's scaled weight and bias, shortcut -> spikes of LIF(tdBN(x) + shortcut), the tdBN normalizing
    with the batch statistics ``mean`` and ``invstd`` (computed by ``lif_norm_train``; constants here, as the
    backward accounts for their dependence on x, as ATen's batch-norm backward does). x contiguous."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        shortcut: torch.Tensor | None,
        mean: np.ndarray,
        invstd: np.ndarray,
        tau: float,
        v_th: float,
        width: float,
    ) -> torch.Tensor:
        x = x.detach()
        channels, size = x.shape[2], math.prod(x.shape[3:])
        scale, shift = np.empty(channels, np.float32), np.empty(channels, np.float32)
        train_affine(
            mean,
            invstd,
            weight.detach().numpy(),
            bias.detach().numpy(),
            batch_norm_train_shift_rounds_once(),
            scale,
            shift,
        )
        rounded_once = batch_norm_rounds_once()
        if shortcut is not None:
            shortcut = shortcut.detach().contiguous()
        spikes = torch.empty_like(x)
        lif_norm_train_forward(
            _samples(x),
            size,
            scale,
            shift,
            rounded_once,
            None if shortcut is None else _samples(shortcut),
            np.float32(tau),
            np.float32(v_th),
            _samples(spikes),
        )
        ctx.save_for_backward(x, weight, shortcut)
        ctx.stats = mean, invstd, scale, shift, rounded_once
        ctx.tau, ctx.v_th, ctx.width = tau, v_th, width
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        x, weight, shortcut = ctx.saved_tensors
        mean, invstd, scale, shift, rounded_once = ctx.stats
        channels, size = x.shape[2], math.prod(x.shape[3:])
        count = x.numel() // channels
        grad_spikes = grad_spikes.contiguous()
        grad_current = torch.empty_like(x)  # dL/dI: the tdBN output's gradient, and the shortcut's
        grad_sum, grad_dot = np.zeros(channels, np.float64), np.zeros(channels, np.float64)
        lif_norm_train_backward(
            _samples(grad_spikes),
            _samples(x),
            size,
            scale,
            shift,
            rounded_once,
            None if shortcut is None else _samples(shortcut),
            mean,
            np.float32(ctx.tau),
            np.float32(ctx.v_th),
            np.float32(ctx.width / 2),
            np.float32(ctx.width),
            _samples(grad_current),
            grad_sum,
            grad_dot,
        )
        # ATen's batch_norm_cpu_backward_contiguous_impl, per channel, from the float64 sums:
        # k = float(dot) * invstd * invstd / N, grad_mean = sum / N, dL/dweight = dot * invstd, dL/dbias = sum
        k = grad_dot.astype(np.float32) * invstd * invstd / np.float32(count)
        grad_mean = (grad_sum / count).astype(np.float32)
        grad_weight = torch.from_numpy((grad_dot * invstd).astype(np.float32))
        grad_bias = torch.from_numpy(grad_sum.astype(np.float32))
        keep_current = shortcut is not None and ctx.needs_input_grad[3]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x) if keep_current else grad_current  # else in place
            batch_norm_train_grad_input(
                _samples(grad_current),
                _samples(x),
                size,
                mean,
                k,
                grad_mean,
                invstd,
                weight.detach().numpy(),
                _samples(grad_x) if keep_current else None,
            )
        return grad_x, grad_weight, grad_bias, grad_current if keep_current else None, None, None, None, None, None


def lif_norm_train(
    x: torch.Tensor, norm: TdBatchNorm, shortcut: torch.Tensor | None, tau: float, v_th: float, width: float
) -> torch.Tensor:
    """Spikes of LIF(norm(x) + shortcut) for a train-mode tdBN ``norm`` (``norm_trains_in_kernel``), differentiable
    in x, the tdBN's weight and bias and the shortcut, with norm's running statistics and batch count updated as
    its forward updates them."""
    # TdBatchNorm.forward's bookkeeping, as it does it
    momentum = 0.0 if norm.momentum is None else norm.momentum
    norm.num_batches_tracked.add_(1)
    norm._affine = None
    if norm.momentum is None:
        momentum = 1.0 / float(norm.num_batches_tracked)

    x = x.contiguous()  # the stem's input, one image repeated T times: F.batch_norm gets that copy too
    channels = x.shape[2]
    mean, var_sum, invstd = (np.empty(channels, np.float32) for _ in range(3))
    channel_stats(x.detach().numpy().reshape(x.shape[0] * x.shape[1], channels, -1), mean, var_sum)
    batch_norm_update_stats(
        mean,
        var_sum,
        x.numel() // channels,
        momentum,
        norm.eps,
        invstd,
        norm.running_mean.detach().numpy(),
        norm.running_var.detach().numpy(),
    )
    return LIFNormFunction.apply(x, norm.scaled_weight(), norm.bias, shortcut, mean, invstd, tau, v_th, width)
