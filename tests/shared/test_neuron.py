"""LIF dynamics against the paper's recurrence, the rectangular surrogate gradient (Eq. 6), and the fused
inference pass against both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from spikebottlenet.shared import neuron
from spikebottlenet.shared.lif_config import LIFConfig
from spikebottlenet.shared.neuron import LIF, SurrogateSpike, use_fused_inference


def reference_lif(current: torch.Tensor, tau: float, v_th: float) -> torch.Tensor:
    """u[t] = tau * u[t-1] * (1 - s[t-1]) + I[t],  s[t] = u[t] >= v_th, written out step by step."""
    u = torch.zeros_like(current[0])
    s = torch.zeros_like(current[0])
    spikes = []
    for t in range(current.shape[0]):
        u = tau * u * (1 - s) + current[t]
        s = (u >= v_th).to(current.dtype)
        spikes.append(s)
    return torch.stack(spikes)


@pytest.mark.parametrize("config", [LIFConfig(), LIFConfig(tau=0.9, v_th=1.0, surrogate_width=0.5)])
def test_lif_matches_the_recurrence_exactly(config: LIFConfig) -> None:
    generator = torch.Generator().manual_seed(0)
    current = torch.rand(6, 3, 4, 5, 5, generator=generator) * config.v_th  # [T, B, C, H, W]
    current[0, 0, 0, 0, 0] = config.v_th  # exactly at threshold: fires (>=)
    spikes = LIF(config)(current)
    expected = reference_lif(current, config.tau, config.v_th)
    assert torch.equal(spikes, expected)
    # the input mixes sub- and supra-threshold steps, so both outcomes (and resets) were exercised
    assert 0 < spikes.mean() < 1
    assert spikes[0, 0, 0, 0, 0] == 1


def test_lif_hard_reset_and_leak_on_a_hand_example() -> None:
    lif = LIF(LIFConfig(tau=0.5, v_th=1.0))
    current = torch.tensor([0.6, 0.8, 0.6, 0.2, 0.95]).view(5, 1)  # [T, B]
    # u: 0.6 -> 0.3 + 0.8 = 1.1 (fire, reset) -> 0 + 0.6 -> 0.3 + 0.2 = 0.5 -> 0.25 + 0.95 = 1.2 (fire)
    assert lif(current).view(-1).tolist() == [0, 1, 0, 0, 1]


@pytest.mark.parametrize(
    ("v_th", "width", "points", "expected"),
    [
        # ds/du = (1/a) * 1[|u - v_th| < a/2]; the window's edges (|u - v_th| == a/2) are outside it
        (0.5, 1.0, [-0.1, 0.0, 0.01, 0.5, 0.99, 1.0, 1.2], [0, 0, 1, 1, 1, 0, 0]),
        (0.5, 0.5, [0.2, 0.25, 0.3, 0.5, 0.7, 0.75, 0.8], [0, 0, 2, 2, 2, 0, 0]),
        (1.0, 2.0, [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0], [0, 0, 0.5, 0.5, 0.5, 0, 0]),
    ],
)
def test_surrogate_gradient_values(v_th: float, width: float, points: list[float], expected: list[float]) -> None:
    u = torch.tensor(points, requires_grad=True)
    upstream = torch.linspace(1.0, 2.0, len(points))  # the surrogate must scale the incoming gradient
    spikes = SurrogateSpike(v_th, width)(u)
    (spikes * upstream).sum().backward()
    assert spikes.tolist() == [float(p >= v_th) for p in points]
    assert torch.allclose(u.grad, upstream * torch.tensor(expected))


def test_lif_backward_uses_the_configured_surrogate_width() -> None:
    # one time step: s = H(I), so ds/dI is the surrogate itself
    lif = LIF(LIFConfig(v_th=0.5, surrogate_width=0.4))
    current = torch.tensor([[0.29, 0.31, 0.69, 0.71]], requires_grad=True)  # [T=1, B=4]
    lif(current).sum().backward()
    assert torch.allclose(current.grad, torch.tensor([[0.0, 2.5, 2.5, 0.0]]))


# --- the fused inference pass (shared/lif_kernel.py) against the step-by-step reference ---


def fused_lif(
    config: LIFConfig, current: torch.Tensor, inference_dtype: torch.dtype = torch.float32, **parts
) -> torch.Tensor:
    """The LIF module without autograd: the path that takes the fused pass."""
    with torch.inference_mode():
        return LIF(config, inference_dtype)(current, **parts)


# currents around the threshold: exactly at it, one float either side, negatives, zeros, large values,
# infinities (an infinite u fires, and its reset u * 0 is NaN, which the fused pass must reproduce)
V_TH = 0.5
AT_THRESHOLD = [
    V_TH,
    float(np.nextafter(np.float32(V_TH), np.float32(0))),
    float(np.nextafter(np.float32(V_TH), 1)),
    -V_TH,
    0.0,
    -0.0,
    1e30,
    -1e30,
    float("inf"),
    float("-inf"),
]
current_values = st.one_of(st.sampled_from(AT_THRESHOLD), st.floats(-2.0, 2.0, width=32))


@st.composite
def currents(draw) -> torch.Tensor:
    """[T, B, ...] float32, T up to 20 steps, odd shapes, sometimes a non-contiguous view."""
    time_steps = draw(st.integers(1, 20))
    shape = (time_steps, *draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))
    current = torch.from_numpy(draw(arrays(np.float32, shape, elements=current_values)))
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    if layout == "transposed" and current.dim() >= 3:
        return current.transpose(1, -1)
    if layout == "strided":
        return current[:, ::2]
    return current


@settings(max_examples=200, deadline=None)  # deadline: the first example compiles the pass
@given(current=currents(), config=st.sampled_from([LIFConfig(), LIFConfig(tau=0.3, v_th=0.7)]))
def test_fused_pass_spikes_equal_the_recurrence(current: torch.Tensor, config: LIFConfig) -> None:
    expected = reference_lif(current, config.tau, config.v_th)
    assert torch.equal(fused_lif(config, current), expected)
    assert torch.equal(LIF(config)(current), expected)  # autograd on: the fused training Function
    # the encoder's LIF: the same spikes as bools, a byte each (numba's loop for a bool output)
    spikes = fused_lif(config, current, torch.bool)
    assert spikes.dtype == torch.bool and np.array_equal(spikes.numpy(), expected.numpy() == 1)


@pytest.mark.parametrize("fused", [True, False])
def test_bool_spikes_in_inference_float_spikes_under_autograd(fused: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    current = torch.randn(4, 2, 3, 5, 5, generator=generator)
    expected = reference_lif(current, 0.25, 0.5)
    lif = LIF(LIFConfig(), inference_dtype=torch.bool)
    use_fused_inference(lif, fused)
    with torch.no_grad():
        spikes = lif(current)
    assert spikes.dtype == torch.bool and np.array_equal(spikes.numpy(), expected.numpy() == 1)
    # training: float spikes that carry the surrogate gradient back to the current
    current.requires_grad_()
    spikes = lif(current)
    assert spikes.dtype == torch.float32 and torch.equal(spikes, expected)
    spikes.sum().backward()
    assert current.grad is not None and current.grad.any()


def test_a_lif_emits_float32_or_bool_spikes_only() -> None:
    with pytest.raises(ValueError, match="float32 or bool"):
        LIF(LIFConfig(), inference_dtype=torch.float16)


def test_fused_pass_fires_at_the_threshold_for_many_steps() -> None:
    # 0.3 and 0.7 are not float32 numbers: the threshold compares in float32, as torch compares the reference's u
    config = LIFConfig(tau=0.3, v_th=0.7)
    generator = torch.Generator().manual_seed(0)
    current = torch.rand(64, 3, 5, 7, 9, generator=generator) * 0.8  # [T, B, C, H, W], long in time
    current[:, :, 0] = config.v_th  # a channel exactly at threshold: fires every step
    spikes = fused_lif(config, current)
    assert torch.equal(spikes, reference_lif(current, config.tau, config.v_th))
    assert spikes[:, :, 0].all() and 0 < spikes.mean() < 1


def test_the_shortcut_is_added_before_the_neuron() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, 3, 5, 5, generator=generator)
    shortcut = (torch.rand(4, 2, 3, 5, 5, generator=generator) < 0.5).float()  # spikes, as on an identity shortcut
    expected = reference_lif(x + shortcut, 0.25, 0.5)
    assert torch.equal(fused_lif(LIFConfig(), x, shortcut=shortcut), expected)
    assert torch.equal(LIF()(x, shortcut=shortcut), expected)


@pytest.mark.parametrize("grad_mode", ["requires_grad", "grad_enabled"])
def test_autograd_keeps_the_step_by_step_path(grad_mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With autograd on, the LIF never takes the fused inference pass, whatever its switch (training has its own,
    tests/shared/test_lif_autograd.py)."""

    def no_fused_pass(*args, **kwargs):
        raise AssertionError("the fused pass ran under autograd")

    monkeypatch.setattr(neuron, "lif_pass", no_fused_pass)
    generator = torch.Generator().manual_seed(2)
    current = torch.randn(5, 2, 3, 4, generator=generator, requires_grad=grad_mode == "requires_grad")
    lif = LIF(LIFConfig(surrogate_width=0.4))
    assert lif.fused_inference
    spikes = lif(current)
    assert torch.equal(spikes, reference_lif(current.detach(), lif.tau, lif.v_th))
    if current.requires_grad:
        spikes.sum().backward()
        assert current.grad is not None and current.grad.any()


def test_use_fused_inference_switches_every_lif() -> None:
    model = nn.Sequential(LIF(), nn.Sequential(LIF(), nn.Identity()))
    use_fused_inference(model, False)
    assert [m.fused_inference for m in model.modules() if isinstance(m, LIF)] == [False, False]
    use_fused_inference(model, True)
    assert all(m.fused_inference for m in model.modules() if isinstance(m, LIF))


def test_an_empty_batch_takes_the_step_by_step_path() -> None:
    assert fused_lif(LIFConfig(), torch.zeros(3, 0, 4)).shape == (3, 0, 4)


def test_inplace_writes_the_spikes_over_the_input_only_when_it_may() -> None:
    generator = torch.Generator().manual_seed(4)
    current = torch.randn(4, 2, 3, 5, 5, generator=generator)
    shortcut = (torch.rand(4, 2, 3, 5, 5, generator=generator) < 0.5).float()
    expected = reference_lif(current + shortcut, 0.25, 0.5)
    with torch.inference_mode():
        scratch = current.clone()
        spikes = LIF(LIFConfig(), inplace=True)(scratch, shortcut=shortcut)
        assert spikes.data_ptr() == scratch.data_ptr() and torch.equal(scratch, expected)  # x now holds the spikes
        untouched = current.clone()
        assert torch.equal(LIF(LIFConfig())(untouched, shortcut=shortcut), expected)
        assert torch.equal(untouched, current)  # not in place: x as it was
        # a non-contiguous x is copied first, and the copy takes the spikes: x as it was
        transposed = current.transpose(1, 2).contiguous().transpose(1, 2)  # current's values, strides of [T, C, B, ...]
        assert not transposed.is_contiguous()
        assert torch.equal(LIF(LIFConfig(), inplace=True)(transposed, shortcut=shortcut), expected)
        assert torch.equal(transposed, current)
        # bool spikes cannot overwrite float32 currents
        kept = current.clone()
        assert torch.equal(LIF(LIFConfig(), torch.bool, inplace=True)(kept, shortcut=shortcut), expected)
        assert torch.equal(kept, current)
    # under autograd the step-by-step path runs and x is never written
    trained = current.clone().requires_grad_()
    assert torch.equal(LIF(LIFConfig(), inplace=True)(trained, shortcut=shortcut), expected)
    assert torch.equal(trained.detach(), current)
