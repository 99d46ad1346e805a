"""Wire-aware training: the firing-rate term and the in-loop bit flips on what the head transmits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spikebottlenet.sbn.cli import main
from spikebottlenet.shared.checkpoint_metadata import WireTraining, default_checkpoint, read_checkpoint_info
from spikebottlenet.training.wire_training import WireHook


class FixedSpikes(nn.Module):
    """A 'head' whose output is its own parameter: spikes [T, B, C, H, W] whose gradient the test can read."""

    def __init__(self, spikes: torch.Tensor) -> None:
        super().__init__()
        self.spikes = nn.Parameter(spikes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spikes * 1.0


SPIKES = (torch.rand(4, 8, 4, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()


def test_in_evaluation_the_hook_only_measures() -> None:
    head = FixedSpikes(SPIKES.clone()).eval()
    with WireHook(head, WireTraining(rate_weight=2.0, flip_probability=0.5)) as hook:
        out = head(torch.zeros(1))
    assert torch.equal(out, SPIKES)
    assert hook.penalty().item() == pytest.approx(2.0 * SPIKES.mean().item())


def test_in_training_bits_flip_at_their_rate_and_flipped_gradients_reverse() -> None:
    head = FixedSpikes(SPIKES.clone()).train()
    p = 0.1
    with WireHook(head, WireTraining(flip_probability=p), torch.Generator().manual_seed(1)):
        out = head(torch.zeros(1))
    flipped = out.detach() != SPIKES
    assert set(out.detach().unique().tolist()) <= {0.0, 1.0}  # still binary
    n = flipped.numel()
    assert abs(flipped.sum().item() - n * p) < 5 * np.sqrt(n * p * (1 - p))
    weights = torch.randn(SPIKES.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    expected = torch.where(flipped, -weights, weights)  # d(s XOR n)/ds = 1 - 2n
    assert torch.allclose(head.spikes.grad, expected)


def test_in_training_whole_channels_go_silent_at_their_rate_as_erased_chunks_arrive() -> None:
    spikes = torch.ones(4, 64, 8, 8, 8)  # every neuron fires: a silenced one shows
    head = FixedSpikes(spikes.clone()).train()
    q = 0.25
    with WireHook(head, WireTraining(erase_probability=q), torch.Generator().manual_seed(3)):
        out = head(torch.zeros(1)).detach()
    per_channel = out.sum(dim=(0, 3, 4))  # [B, C]: 256 spikes in a kept channel, 0 in an erased one
    assert set(per_channel.unique().tolist()) <= {0.0, 256.0}  # all of a channel or none of it, over every T
    erased, n = int((per_channel == 0).sum()), per_channel.numel()
    assert abs(erased - n * q) < 5 * np.sqrt(n * q * (1 - q))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        WireTraining(rate_weight=-1)
    with pytest.raises(ValueError):
        WireTraining(flip_probability=1.5)
    with pytest.raises(ValueError):
        WireTraining(erase_probability=-0.1)


@pytest.mark.slow
def test_refine_writes_a_recalibrated_checkpoint_with_a_refitted_codec(tmp_path: Path) -> None:
    out = tmp_path / "rb16-refined.safetensors"
    source = default_checkpoint("spiking_resnet50", 16)
    assert (
        main(
            [
                "train",
                "refine",
                str(source),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--rate-weight",
                "5",
                "--flip-probability",
                "0.01",
                "--erase-probability",
                "0.1",
                "--threads",
                "1",
                "--subset",
                "512",
                "256",
            ]
        )
        == 0
    )  # of MNIST's 50,000 / 10,000: the wiring, not the accuracy
    refined, before = read_checkpoint_info(out), read_checkpoint_info(source)
    assert refined.info_verified and refined.fingerprint != before.fingerprint
    assert refined.info.wire_training == WireTraining(rate_weight=5.0, flip_probability=0.01, erase_probability=0.1)
    assert refined.info.refined_from == before.fingerprint and refined.info.stage == "refine"
    assert refined.config.entropy_model is not None and refined.info.entropy_codec.test_images == 256
