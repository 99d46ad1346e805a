"""A training conv whose backward runs in channels-last layout, its forward unchanged.

Profiled on one CPU training step of the narrow ResNet (width 1/16, T = 4, batch 128, one thread), the convs'
backward took 45 % of the step and their forward 21 %. oneDNN's backward kernels for a few channels are
faster on NHWC tensors than on NCHW ones; its forward kernels are too, but they add in another order, and a
forward that moves in the last bits moves spikes across the threshold. So only the backward changes layout:
the forward is ``F.conv2d`` as before (bit for bit), and the gradients are ATen's ``convolution_backward`` on
the same tensors in channels-last order, equal to the NCHW ones up to float32 summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CHANNELS_LAST = torch.channels_last


class ChannelsLastBackwardConv2d(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups)``, its backward in channels-last layout."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.conv = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_output.contiguous(memory_format=CHANNELS_LAST),
            x.contiguous(memory_format=CHANNELS_LAST),
            weight.contiguous(memory_format=CHANNELS_LAST),
            [weight.shape[0]] if ctx.has_bias else None,
            stride,
            padding,
            dilation,
            False,  # transposed
            [0, 0],  # output_padding
            groups,
            wanted,
        )
        grad_weight = None if grad_weight is None else grad_weight.contiguous()  # the parameter's own layout
        return grad_x, grad_weight, grad_bias, None, None, None, None


class FusedTrainingConv:
    """A conv module that takes ChannelsLastBackwardConv2d in training while ``fused_training`` is on (the
    default; shared/neuron.py's ``use_fused_training`` switches it with the LIFs)."""

    fused_training = True


def trains_channels_last(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a conv on ``x`` takes ChannelsLastBackwardConv2d: under autograd, CPU float32 (oneDNN's layouts)."""
    return (
        torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.dim() == 4
        and torch.backends.mkldnn.is_available()
    )
