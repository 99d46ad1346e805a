"""The training conv whose backward runs in channels-last layout: the forward bit for bit, the gradients
against float64 autograd."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from spikebottlenet.shared.conv_autograd import ChannelsLastBackwardConv2d
from spikebottlenet.shared.layers import SpikeConv2d
from spikebottlenet.shared.neuron import use_fused_training


@st.composite
def convs(draw: st.DrawFn):
    in_ch = draw(st.integers(1, 8))
    depthwise = draw(st.booleans())
    out_ch, groups = (in_ch, in_ch) if depthwise else (draw(st.integers(1, 8)), 1)
    kernel = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 2]))
    size = draw(st.integers(kernel, 9))
    batch = draw(st.integers(1, 6))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    x = torch.randn(batch, in_ch, size, size, generator=generator)
    weight = torch.randn(out_ch, in_ch // groups, kernel, kernel, generator=generator)
    bias = torch.randn(out_ch, generator=generator) if draw(st.booleans()) else None
    return x, weight, bias, (stride, stride), (kernel // 2, kernel // 2), (1, 1), groups, generator


@settings(max_examples=100, deadline=None)
@given(case=convs())
def test_forward_bit_for_bit_and_gradients_within_float32_summation_error(case) -> None:
    x, weight, bias, stride, padding, dilation, groups, generator = case
    leaves = [t.clone().requires_grad_() for t in (x, weight) + (() if bias is None else (bias,))]
    out = ChannelsLastBackwardConv2d.apply(
        *leaves[:2], leaves[2] if bias is not None else None, stride, padding, dilation, groups
    )
    assert torch.equal(out, F.conv2d(x, weight, bias, stride, padding, dilation, groups))
    grad = torch.randn(out.shape, generator=generator)
    got = torch.autograd.grad(out, leaves, grad)

    # the reference: autograd through F.conv2d in float64; and, element by element, the sum of the magnitudes of
    # the products each gradient element adds up (the same backward on absolute values)
    def float64_grads(tensors: list[torch.Tensor], upstream: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves64 = [t.detach().double().requires_grad_() for t in tensors]
        out64 = F.conv2d(
            leaves64[0], leaves64[1], leaves64[2] if len(leaves64) > 2 else None, stride, padding, dilation, groups
        )
        return torch.autograd.grad(out64, leaves64, upstream.double())

    exact = float64_grads(leaves, grad)
    magnitude = float64_grads([t.abs() for t in leaves], grad.abs())
    for g, e, m in zip(got, exact, magnitude, strict=True):
        # float32 sums: each element within a few ulps of the sum of its terms' magnitudes
        assert ((g.double() - e).abs() <= 8 * torch.finfo(torch.float32).eps * m).all()


def test_a_spike_conv_takes_it_in_fused_training_only() -> None:
    conv = SpikeConv2d(4, 6, 3, 1, padding=1, bias=False)
    x = torch.randn(2, 4, 8, 8)
    assert conv(x).grad_fn.name() == "ChannelsLastBackwardConv2dBackward"
    use_fused_training(conv, True, norm=False)  # the comparisons' way: autograd's own backward
    assert conv(x).grad_fn.name() == "ConvolutionBackward0"
    use_fused_training(conv, True)
    with torch.no_grad():
        assert conv(x).grad_fn is None
