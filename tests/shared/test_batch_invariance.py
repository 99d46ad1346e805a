"""What a request's answer depends on when the edge micro-batches it with others.

The spiking layers of the tail pick conv algorithms whose result for a sample does not depend on its
batch (shared/layers.py), so everything up to the classifier's spike rates is the same bit for bit in a
batch of 1 and of 40. The classifier's matrix product is a BLAS GEMM whose blocking follows the batch,
so the logits are not: they are checked against a float64 product of the same rates instead, within the
worst-case float32 error of a dot product of that length.
"""

from __future__ import annotations

import pytest
import torch

from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import DEFAULT_MODEL_DIR
from spikebottlenet.shared.layers import SpikeRateClassifier

MODELS = ["mnist_rb3", "mnist_rb8", "mnist_rb16", "mnist_irb8"]
BATCH = 40


@pytest.mark.parametrize("name", MODELS)
def test_rates_are_batch_invariant_and_logits_within_a_dot_products_rounding(name: str) -> None:
    loaded = load_checkpoint(DEFAULT_MODEL_DIR / f"{name}.safetensors", part="tail")
    tail = loaded.model.eval()
    (classifier,) = [m for m in tail.modules() if isinstance(m, SpikeRateClassifier)]
    rates: list[torch.Tensor] = []
    classifier.fc.register_forward_pre_hook(lambda module, args: rates.append(args[0]))
    generator = torch.Generator().manual_seed(0)
    spikes = (torch.rand((BATCH, *loaded.config.spike_shape), generator=generator) < 0.3).float()  # [B, T, C, H, W]
    with torch.no_grad():
        batched = tail(spikes.transpose(0, 1).contiguous())  # [B, K]
        alone = torch.cat([tail(spikes[i : i + 1].transpose(0, 1).contiguous()) for i in range(BATCH)])
    batched_rates, alone_rates = rates[0], torch.cat(rates[1:])  # [B, C] each
    assert torch.equal(batched_rates, alone_rates)

    # float64 reference of fc(rates); a float32 dot product of n terms is within
    # gamma_n * sum |w_i * x_i| of it, gamma_n = n * u / (1 - n * u) with u the unit roundoff
    weight, bias = classifier.fc.weight.double(), classifier.fc.bias.double()  # [K, C], [K]
    x = batched_rates.double()
    reference = x @ weight.T + bias
    n, u = weight.shape[1] + 1, torch.finfo(torch.float32).eps / 2
    bound = n * u / (1 - n * u) * (x.abs() @ weight.abs().T + bias.abs()) + u * reference.abs()
    for logits in (batched, alone):
        assert ((logits.double() - reference).abs() <= bound).all()
