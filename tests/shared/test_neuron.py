"""LIF dynamics against the paper's recurrence, and the rectangular surrogate gradient (Eq. 6)."""

from __future__ import annotations

import pytest
import torch

from shared.neuron import LIF, LIFConfig, SurrogateSpike


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


@pytest.mark.parametrize(("v_th", "width", "points", "expected"), [
    # ds/du = (1/a) * 1[|u - v_th| < a/2]; the window's edges (|u - v_th| == a/2) are outside it
    (0.5, 1.0, [-0.1, 0.0, 0.01, 0.5, 0.99, 1.0, 1.2], [0, 0, 1, 1, 1, 0, 0]),
    (0.5, 0.5, [0.2, 0.25, 0.3, 0.5, 0.7, 0.75, 0.8], [0, 0, 2, 2, 2, 0, 0]),
    (1.0, 2.0, [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0], [0, 0, 0.5, 0.5, 0.5, 0, 0]),
])
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
