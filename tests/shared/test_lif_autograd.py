"""The LIF's fused training Functions (shared/lif_autograd.py) against autograd through the step-by-step reference:
the spikes bit for bit, the gradients autograd takes, the tdBN's statistics, and a whole training step of each
narrow backbone; and the reference wherever the Functions do not apply."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from spikebottlenet.shared.backbones import backbone_config
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.shared.lif_autograd import (
    LIFFunction,
    LIFNormFunction,
    fused_norm_matches_aten,
    norm_trains_in_kernel,
    trains_in_kernel,
)
from spikebottlenet.shared.lif_config import LIFConfig
from spikebottlenet.shared.neuron import LIF, StepState, stepping, use_fused_training
from spikebottlenet.shared.td_batch_norm import TdBatchNorm

CONFIGS = [LIFConfig(), LIFConfig(tau=0.3, v_th=0.7, surrogate_width=0.4)]


def near(value: float) -> list[float]:
    """value as float32 and the float32 numbers either side of it."""
    v = np.float32(value)
    return [float(np.nextafter(v, np.float32(-np.inf))), float(v), float(np.nextafter(v, np.float32(np.inf)))]


def edges(config: LIFConfig) -> list[float]:
    """Currents on the edges the LIF tells apart: the threshold (fires at >=) and the surrogate window's edges
    v_th +- a/2 (outside it), each exactly and one float either side; a current is the membrane at t = 0."""
    half = config.surrogate_width / 2
    return [*near(config.v_th), *near(config.v_th - half), *near(config.v_th + half), 0.0, -0.0]


@st.composite
def lif_cases(draw) -> tuple[LIFConfig, torch.Tensor, torch.Tensor]:
    """A config, a current [T, ...] concentrated near its threshold (T in 1..6), and an upstream gradient."""
    config = draw(st.sampled_from(CONFIGS))
    time_steps = draw(st.integers(1, 6))
    shape = (time_steps, *draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    values = st.one_of(
        st.sampled_from(edges(config)),
        st.floats(float(np.float32(config.v_th - 0.6)), float(np.float32(config.v_th + 0.6)), width=32),
        st.floats(-3.0, 3.0, width=32),
    )
    current = torch.from_numpy(draw(arrays(np.float32, shape, elements=values)))
    grad = torch.from_numpy(draw(arrays(np.float32, shape, elements=st.floats(-2.0, 2.0, width=32))))
    if draw(st.booleans()) and current.dim() >= 3:  # a non-contiguous current: the Function copies it
        current = current.transpose(1, 2).contiguous().transpose(1, 2)
    return config, current, grad


def reference_and_fused(lif: LIF, *inputs: torch.Tensor, **parts) -> tuple[torch.Tensor, torch.Tensor]:
    """The spikes of ``lif`` on ``inputs`` with its fused training Functions off, then on."""
    outputs = []
    for fused in (False, True):
        use_fused_training(lif, fused)
        outputs.append(lif(*inputs, **parts))
    return outputs[0], outputs[1]


def assert_close_to_autograd(fused: torch.Tensor | None, reference: torch.Tensor | None) -> None:
    """The fused tdBN's gradients against autograd's through F.batch_norm's backward.

    The tdBN backward reduces N = T * B * H * W terms per channel (the sum of dL/dI and of (x - mean) * dL/dI),
    here in float64, in ATen in float32 vectors added in float64: the sums agree to a few float32 ulps, and
    enter every element of dL/dx through (dy - sum / N - (x - mean) * k) * invstd * w, where the terms cancel.
    An element's error is thus a few ulps of the largest term, not of itself: atol = 1e-5 * max |reference|
    (about 80 float32 ulps of the largest gradient), rtol = 1e-6. Measured: up to 6e-7 * max |reference| for
    one tdBN."""
    assert (fused is None) == (reference is None)
    if reference is not None:
        torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-5 * float(reference.abs().max()))


@settings(max_examples=300, deadline=None)  # deadline: the first example compiles the loops
@given(case=lif_cases())
def test_lif_function_spikes_and_gradient_are_the_reference(case) -> None:
    config, current, grad = case
    lif = LIF(config)
    inputs = [current.clone().requires_grad_() for _ in range(2)]
    use_fused_training(lif, False)
    reference = lif(inputs[0])
    use_fused_training(lif, True)
    fused = lif(inputs[1])
    assert reference.grad_fn.name() == "StackBackward0" and fused.grad_fn.name() == "LIFFunctionBackward"
    assert torch.equal(fused, reference)
    reference.backward(grad)
    fused.backward(grad)
    # bit for bit: every sum in the reference's graph has two terms, which IEEE adds alike in either order, and
    # the Function rounds each product and quotient as autograd does (NaN where an infinite current makes one)
    torch.testing.assert_close(inputs[1].grad, inputs[0].grad, rtol=0, atol=0, equal_nan=True)


def test_lif_function_on_the_hand_example_and_its_memory() -> None:
    lif = LIF(LIFConfig(tau=0.5, v_th=1.0))
    current = torch.tensor([0.6, 0.8, 0.6, 0.2, 0.95]).view(5, 1).requires_grad_()  # as in test_neuron.py
    spikes = lif(current)
    assert spikes.view(-1).tolist() == [0, 1, 0, 0, 1]
    # all the backward keeps: the potentials before each reset, one float32 tensor the current's size
    (membrane,) = spikes.grad_fn.saved_tensors
    assert membrane.shape == current.shape and membrane.view(-1).tolist() == pytest.approx([0.6, 1.1, 0.6, 0.5, 1.2])


@st.composite
def norm_cases(draw):
    """x [T, B, C, H, W] for a train-mode tdBN, an optional shortcut of spikes, an upstream gradient, a momentum."""
    time_steps, batch = draw(st.integers(1, 6)), draw(st.integers(2, 4))  # F.batch_norm wants 2 values a channel
    channels, height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    shape = (time_steps, batch, channels, height, width)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    x = torch.randn(shape, generator=generator) * draw(st.sampled_from([0.5, 2.0])) + 0.3
    if draw(st.booleans()):  # repeated over T, as the stem's conv output: stride 0 over T
        x = x[:1].expand(shape)
    shortcut = (torch.rand(shape, generator=generator) < 0.4).float() if draw(st.booleans()) else None
    grad = torch.randn(shape, generator=generator)
    return x, shortcut, grad, draw(st.sampled_from([0.1, None])), draw(st.sampled_from(CONFIGS)), generator


@settings(max_examples=200, deadline=None)
@given(case=norm_cases())
def test_the_tdbn_in_the_pass_is_the_module_bit_for_bit(case) -> None:
    x, shortcut, grad, momentum, config, generator = case
    lif = LIF(config)
    norm = TdBatchNorm(x.shape[2], config.v_th, alpha=0.7, momentum=momentum)
    with torch.no_grad():
        norm.weight.uniform_(0.2, 2.0, generator=generator)
        norm.bias.normal_(0.0, 0.3, generator=generator)
        norm.running_mean.normal_(0.0, 0.5, generator=generator)
    norms = [norm, copy.deepcopy(norm)]
    leaves = [
        [x.clone().requires_grad_(), None if shortcut is None else shortcut.clone().requires_grad_()] for _ in range(2)
    ]
    outputs, norm_outputs = [], []
    norms[0].register_forward_hook(lambda module, args, output: norm_outputs.append(output))
    for fused, (x_i, shortcut_i), norm_i in zip((False, True), leaves, norms, strict=True):
        use_fused_training(lif, fused)
        outputs.append(lif(x_i if x.stride(0) else x_i[:1].expand(x.shape), norm_i, shortcut=shortcut_i))
    reference, fused = outputs
    # the tdBN goes into the pass only where this torch's batch norm rounds as the kernels do (checked once per
    # process against F.batch_norm); elsewhere (another ISA or build) the LIF alone is fused, and this still holds
    takes_norm = x.shape[2] > 1 and x.shape[3] * x.shape[4] > 1 and fused_norm_matches_aten()
    assert fused.grad_fn.name() == ("LIFNormFunctionBackward" if takes_norm else "LIFFunctionBackward")
    assert torch.equal(fused, reference)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(norms[1], name), getattr(norms[0], name)), name
    sources = [[*leaf, n.weight, n.bias] for leaf, n in zip(leaves, norms, strict=True)]
    wanted = [t for t in sources[0] if t is not None]
    grads = (
        torch.autograd.grad(reference, [*wanted, *norm_outputs], grad),
        torch.autograd.grad(fused, [t for t in sources[1] if t is not None], grad),
    )
    *reference_grads, current_grad = grads[0]  # current_grad: dL/dI [T, B, C, H, W], through autograd
    for got, expected in zip(grads[1][:-2], reference_grads[:-2], strict=True):
        assert_close_to_autograd(got, expected)
    # dL/dweight and dL/dbias are per-channel sums of N float32 terms, g * alpha * v_th * x_hat and g: their
    # error is a few ulps of the sum of the terms' magnitudes, which cancellation can make far larger than
    # the sum itself (one case: 6e-8 off a weight gradient of 2e-6, whose terms' magnitudes add up to 0.6)
    x64 = x.detach().double()
    x_hat = (x64 - x64.mean((0, 1, 3, 4), keepdim=True)) / (
        x64.var((0, 1, 3, 4), unbiased=False, keepdim=True) + norm.eps
    ).sqrt()
    g = current_grad.double().abs()
    magnitudes = ((g * x_hat.abs()).sum((0, 1, 3, 4)) * 0.7 * config.v_th, g.sum((0, 1, 3, 4)))
    for got, expected, magnitude in zip(grads[1][-2:], reference_grads[-2:], magnitudes, strict=True):
        bound = 1e-6 * expected.double().abs() + 8 * torch.finfo(torch.float32).eps * magnitude
        assert ((got.double() - expected.double()).abs() <= bound).all(), (got, expected, bound)
    if shortcut is not None and takes_norm:  # the shortcut's gradient is dL/dI itself: the LIF's alone
        assert torch.equal(grads[1][1], grads[0][1])


NARROW = [("spiking_resnet50", 0.0625), ("spiking_mobilenetv2", 0.25)]


def assert_close_after_a_whole_backward(fused: torch.Tensor | None, reference: torch.Tensor | None) -> None:
    """A parameter's gradient after a whole backbone's backward, fused against autograd's.

    Each fused piece is bounded against float64 on its own at its own rounding (the tdBN above, the conv in
    tests/shared/test_conv_autograd.py); here the differences in summation order of some fifty tdBN and conv
    backwards compound, and cancel most in the gradients that sum many terms of both signs. Measured, as the
    largest |fused - reference| over the largest |reference| of any parameter, three seeds per backbone: up to
    4.1e-6 natively (AVX-512, 2 threads), 1.3e-5 with one thread under ``make test-portable``'s SSE4.1. The
    bound, 1e-4 of the largest, leaves 8x; a gradient routed or laid out wrongly is off by its own size."""
    assert (fused is None) == (reference is None)
    if reference is not None:
        torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-4 * float(reference.abs().max()))


@pytest.mark.parametrize(("arch", "width"), NARROW)
def test_a_training_step_of_a_narrow_backbone(arch: str, width: float) -> None:
    """Forward and backward of a whole backbone (T=2, batch 4, 32x32) three ways from the same weights: the
    reference, the fused LIF alone, and the fused LIF with its tdBN and the convs' channels-last backward. Same
    logits and running statistics bit for bit; the same parameter gradients, bit for bit with the LIF alone, and
    with everything fused within float32 summation order (``assert_close_after_a_whole_backward``)."""
    torch.manual_seed(0)
    initial = SpikingBackbone(backbone_config(arch, width_multiplier=width, num_classes=10), time_steps=2).train()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 7, 9])
    runs = {}
    for way in ("reference", "fused-lif", "fused"):
        model = copy.deepcopy(initial)
        use_fused_training(model, way != "reference", norm=way == "fused")
        logits = model(images)
        F.cross_entropy(logits, labels).backward()
        runs[way] = logits.detach(), dict(model.named_parameters()), dict(model.named_buffers())
    logits, parameters, buffers = runs["reference"]
    assert 0 < float(logits.std())  # the spikes reach the classifier
    for way in ("fused-lif", "fused"):
        assert torch.equal(runs[way][0], logits), way
        for name, buffer in buffers.items():
            assert torch.equal(runs[way][2][name], buffer), f"{way}: {name}"
        for name, parameter in parameters.items():
            got = runs[way][1][name].grad
            if way == "fused-lif":
                assert torch.equal(got, parameter.grad), f"{way}: {name}"
            else:
                assert_close_after_a_whole_backward(got, parameter.grad)


@pytest.fixture
def no_fused_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused training Functions raise if they run."""

    def fail(*args, **kwargs):
        raise AssertionError("a fused training Function ran")

    monkeypatch.setattr(LIFFunction, "apply", fail)
    monkeypatch.setattr(LIFNormFunction, "apply", fail)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_other_dtypes_take_the_reference(dtype: torch.dtype, no_fused_training: None) -> None:
    current = (torch.randn(4, 2, 3, 5, 5, generator=torch.Generator().manual_seed(0)) + 0.3).to(dtype)
    current.requires_grad_()
    lif = LIF()
    spikes = lif(current)
    assert spikes.dtype == dtype and torch.equal(spikes, lif.step_by_step(current)[0])
    spikes.sum().backward()
    assert current.grad is not None
    norm = TdBatchNorm(3, 0.5).to(dtype)
    assert not norm_trains_in_kernel(norm, current, None)


def test_autocast_takes_the_reference(no_fused_training: None) -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1)  # under CPU autocast, the LIF after a conv sees bfloat16
    lif, norm = LIF(), TdBatchNorm(4, 0.5)
    images = torch.randn(2 * 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = conv(images).unflatten(0, (2, 3))  # [T, B, C, H, W]
        spikes = lif(x, norm)
    assert x.dtype == torch.bfloat16 and spikes.dtype == torch.bfloat16
    spikes.float().sum().backward()
    assert conv.weight.grad is not None


def test_devices_other_than_the_cpu_take_the_reference(no_fused_training: None) -> None:
    # the meta device stands for any other (it has no data, so only the path taken can be checked)
    current = torch.randn(3, 2, 4, device="meta", requires_grad=True)
    assert not trains_in_kernel(current)
    assert not norm_trains_in_kernel(TdBatchNorm(2, 0.5), current.view(3, 2, 2, 2, 1), None)
    assert LIF()(current).grad_fn.name() == "StackBackward0"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_takes_the_reference(no_fused_training: None) -> None:
    current = torch.randn(4, 2, 3, 5, 5, device="cuda", requires_grad=True)
    norm = TdBatchNorm(3, 0.5).cuda()
    spikes = LIF()(current, norm)
    spikes.sum().backward()
    assert current.grad is not None


def test_stepping_under_autograd_takes_the_reference(no_fused_training: None) -> None:
    lif = LIF()
    current = torch.randn(4, 2, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    state = StepState()
    with stepping(lif, state):
        steps = [lif(current[t : t + 1]) for t in range(4)]
    assert torch.equal(torch.cat(steps), lif.step_by_step(current)[0])
    torch.cat(steps).sum().backward()
    assert current.grad is not None


def test_an_eval_mode_tdbn_stays_a_module_under_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the tdBN ran in the fused pass in eval mode")

    monkeypatch.setattr(LIFNormFunction, "apply", fail)
    norm = TdBatchNorm(3, 0.5).eval()
    x = torch.randn(4, 2, 3, 5, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    lif = LIF()
    reference, fused = reference_and_fused(lif, x, norm)
    assert fused.grad_fn.name() == "LIFFunctionBackward" and torch.equal(fused, reference)


def test_a_channels_last_input_leaves_the_tdbn_to_its_module() -> None:
    # F.batch_norm takes a channels-last input's statistics in float32, not as the fused pass does
    x = torch.randn(2, 3, 4, 5, 5).movedim(2, -1).contiguous().movedim(-1, 2)  # [T, B, C, H, W], C last in memory
    assert not norm_trains_in_kernel(TdBatchNorm(4, 0.5), x, None)
    assert norm_trains_in_kernel(TdBatchNorm(4, 0.5), x.contiguous(), None)
    # the stem's image repeated over T (stride 0): F.batch_norm gets a contiguous copy, and so does the pass
    assert norm_trains_in_kernel(TdBatchNorm(4, 0.5), x.contiguous()[:1].expand(2, -1, -1, -1, -1), None)


def test_use_fused_training_switches_every_lif() -> None:
    model = nn.Sequential(LIF(), nn.Sequential(LIF(), nn.Identity()))
    assert all(m.fused_training and m.fused_training_norm for m in model.modules() if isinstance(m, LIF))
    use_fused_training(model, False)
    assert [m.fused_training for m in model.modules() if isinstance(m, LIF)] == [False, False]
    use_fused_training(model, True, norm=False)
    assert all(m.fused_training and not m.fused_training_norm for m in model.modules() if isinstance(m, LIF))
