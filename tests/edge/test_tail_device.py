"""Where the tail runs (``--device``, ``--precision``): on this CPU-only machine the CUDA paths are the refusal and
the torch bit-unpack the GPU path uses; a GPU run of bench/cuda_tail_bench.py covers the rest.

- A GPU asked for on a machine without one stops ``sbn edge`` with one line, before it reads a checkpoint.
- ``unpack_bits`` (the GPU's unpack, as torch operations) gives numpy's ``unpackbits`` bits, wire order.
- bfloat16 autocast keeps the logits within a stated share of fp32's, and every label whose fp32 margin
  exceeds twice that.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.errors import ConfigError
from spikebottlenet.shared.processes import free_port
from spikebottlenet.shared.spike_tensors import unpack_bits
from spikebottlenet.shared.torch_runtime import inference_device
from spikebottlenet.training.datasets import load_dataset
from tests.conftest import normalized_images

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is not refused")
# bf16 has 8 bits of mantissa: a logit off by up to 2^-8 of its terms; measured up to 0.036 on logits up to 13
# (0.3 %) on the CPU, where the tail's batch-invariant convs stay float32 and the linear layer runs in bf16
BF16_SHARE = 0.01


@no_gpu
def test_a_gpu_on_a_machine_without_one_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"device 'cuda', but torch .* sees no CUDA GPU here; use cpu"):
        inference_device("cuda")
    process = subprocess.run(
        [sys.executable, "-m", "spikebottlenet", "edge", "--device", "cuda", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 1 and len(lines) == 1 and "Traceback" not in process.stderr, process.stderr
    assert "cannot load the tail: device 'cuda', but torch" in lines[0]


@pytest.mark.parametrize("name", ["tpu", "mps", "cuda0", ""])
def test_a_device_a_tail_cannot_run_on_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ConfigError, match=f"device '{name}'"):
        inference_device(name)


def test_a_device_that_is_not_cpu_or_cuda_is_an_invalid_setting() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "spikebottlenet", "edge", "--device", "tpu", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode != 0 and "device" in process.stderr and "Traceback" not in process.stderr


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=64), cut=st.integers(0, 7))
def test_the_torch_unpack_gives_numpys_bits_most_significant_first(data: bytes, cut: int) -> None:
    n = 8 * len(data) - cut  # the last byte's low bits may be padding
    packed = np.frombuffer(data, dtype=np.uint8)
    expected = np.unpackbits(packed, count=n).astype(bool)
    got = unpack_bits(torch.tensor(packed), n, (n,))
    assert got.dtype == torch.bool and np.array_equal(got.numpy(), expected)
    assert bool(got[0]) == bool(data[0] & 0x80)  # bit 7 of byte 0 is the first spike


def test_bf16_keeps_the_logits_near_fp32_and_every_clear_label() -> None:
    checkpoint = default_checkpoint("spiking_resnet50", 8)
    loaded = load_checkpoint(checkpoint, "full")
    x = normalized_images(loaded.config, load_dataset("mnist", subset=(1, 300)).test.images)
    with torch.inference_mode():
        spikes = loaded.model.head(x)
    fp32 = TailRunner(loaded.model.tail, loaded.checkpoint, 300).infer(spikes)
    tail = load_checkpoint(checkpoint, "tail")
    bf16 = TailRunner(tail.model, tail.checkpoint, 300, precision="bf16").infer(spikes)
    assert bf16.dtype == torch.float32  # the logits leave as float32 whatever the tail ran in
    tolerance = BF16_SHARE * float(fp32.abs().max())
    assert float((bf16 - fp32).abs().max()) <= tolerance
    top2 = fp32.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * tolerance  # no change within the tolerance can swap these
    assert clear.float().mean() > 0.9
    assert torch.equal(bf16.argmax(1)[clear], fp32.argmax(1)[clear])
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        TailRunner(tail.model, tail.checkpoint, 1, precision="fp16")
