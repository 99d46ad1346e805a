"""``sbn device --runtime onnx``: a device process that cannot import torch, against the torch device.

The ONNX device runs in a real process whose ``import torch`` fails (a ``torch`` package earlier on its
path that raises), so it answers only if nothing on its path needs torch. It serves the default demo
model's head exported by ``sbn export onnx``, next to a real edge; the reference is a torch device on
the same edge (a different runtime running the checkpoint's own head), asked the same images.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.device_runtime_bench import torchless_environment
from bench.drawn_digits import draw_strokes
from spikebottlenet.shared.processes import stop, wait_for_edge
from tests.conftest import exported_demo_head
from tests.stack import device_process, start_edge, upload

pytestmark = pytest.mark.slow

IMAGES = 40
# The two runtimes sum each conv's products in their own order, so a membrane that lands within float32
# rounding of the threshold can fire in one and not the other: 77 of MNIST's 20.5 million RB8 test bits
# (docs/deploy.md). A few such bits in 40 images would be plausible; more than this many would not.
MAX_DIFFERING_BITS = 8


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The default demo checkpoint and its head exported as ONNX."""
    return exported_demo_head("onnx", "spiking_resnet50", 8, tmp_path_factory.mktemp("onnx-device"))


@pytest.fixture(scope="module")
def edge_address(heads: tuple[Path, Path]) -> Iterator[str]:
    edge = start_edge(heads[0])
    try:
        wait_for_edge(edge.address, edge.process)
        yield edge.address
    finally:
        stop(edge.process)


@pytest.fixture(scope="module")
def torchless_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """This process's environment, with a ``torch`` package ahead of the real one whose import fails."""
    return torchless_environment(tmp_path_factory.mktemp("no-torch"))


def digit_pngs() -> list[tuple[int, bytes]]:
    rng = np.random.default_rng(7)
    pngs = []
    for i in range(IMAGES):
        buffer = io.BytesIO()
        draw_strokes(i % 10, rng).save(buffer, "PNG")
        pngs.append((i % 10, buffer.getvalue()))
    return pngs


def answers(url: str, pngs: list[tuple[int, bytes]]) -> list[dict]:
    with httpx.Client(base_url=url, timeout=30) as client:
        replies = [client.post("/classify", params={"spikes": "true"}, files=upload(png)) for _, png in pngs]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
    return [r.json() for r in replies]


def spike_bits(answer: dict) -> np.ndarray:
    n = int(np.prod(answer["spike_shape"]))
    return np.unpackbits(np.frombuffer(base64.b64decode(answer["spikes"]["bits"]), np.uint8))[:n]


def test_the_torch_blocker_blocks(torchless_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", "import torch"], env=torchless_env, capture_output=True, text=True)
    assert done.returncode == 1 and "torch is blocked in this process" in done.stderr


def test_a_device_without_torch_answers_as_the_torch_device(
    heads: tuple[Path, Path], edge_address: str, torchless_env: dict[str, str]
) -> None:
    checkpoint, onnx_head = heads
    pngs = digit_pngs()
    with device_process(onnx_head, edge_address, "--runtime", "onnx", env=torchless_env) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text  # the edge holds the same model: the fingerprints agree
        onnx = answers(url, pngs)
        streamed = httpx.post(f"{url}/classify", params={"stream": "true"}, files=upload(pngs[0][1]), timeout=30)
    with device_process(checkpoint, edge_address) as url:
        reference = answers(url, pngs)

    assert [a["label"] for a in onnx] == [a["label"] for a in reference]
    assert sum(a["label"] == str(digit) for (digit, _), a in zip(pngs, onnx, strict=True)) >= 0.9 * IMAGES
    differing = sum(int((spike_bits(a) != spike_bits(b)).sum()) for a, b in zip(onnx, reference, strict=True))
    assert differing <= MAX_DIFFERING_BITS
    for a, b in zip(onnx, reference, strict=True):
        assert a["transmitted_bytes"] == b["transmitted_bytes"] and a["model"] == b["model"]
        if np.array_equal(spike_bits(a), spike_bits(b)):  # the same spikes fired: the same energy, from other counts
            assert a["energy"]["device_45nm_mj"] == pytest.approx(b["energy"]["device_45nm_mj"], rel=1e-6)

    assert streamed.status_code == 422
    assert "needs the torch runtime" in streamed.json()["detail"]


def test_the_onnx_runtime_refuses_a_checkpoint_it_cannot_run(heads: tuple[Path, Path], edge_address: str) -> None:
    checkpoint, _ = heads
    done = subprocess.run(
        [sys.executable, "-m", "spikebottlenet", "device", "--runtime", "onnx", "--checkpoint", str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "the onnx runtime serves heads exported by `sbn export onnx" in done.stderr + done.stdout
