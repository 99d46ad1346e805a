"""``sbn export onnx``: the head as an ONNX graph, run by onnxruntime against the torch head it came from.

The torch head runs as the device runs it (the fused inference pass, ActivityMonitor's hooks for the energy);
the exported graph runs in onnxruntime, a separate implementation of every operation. Their spikes may differ
where a membrane potential lies within float32 rounding of the threshold (onnxruntime's convs add in another
order): the tests bound how often, and a graph that computed anything else would differ in a large share.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper
from safetensors import safe_open

from spikebottlenet.shared.activity_monitor import ActivityMonitor
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import CheckpointError, read_checkpoint_info
from spikebottlenet.shared.energy import ConvRole, CountMode
from spikebottlenet.shared.onnx_head import INPUT, read_exported_head
from spikebottlenet.training.datasets import load_dataset
from tests.conftest import exported_demo_head, normalized_images

pytestmark = pytest.mark.slow  # each export traces the head: about 40 s

MODELS = [("spiking_resnet50", 8), ("spiking_mobilenetv2", 8)]
TEST_IMAGES = 200
# Rounding flips, as a share of all bits: measured 3.8e-6 for RB8 (5.2e-5 for RB16) over MNIST's 10,000 test
# images (docs/benchmarks.md); a graph that computed something else would differ in a share of ~0.1-0.5
MAX_FLIPS = 1e-4


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: f"{m[0]}-{m[1]}")
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return exported_demo_head("onnx", *request.param, tmp_path_factory.mktemp("onnx"))


def session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_the_graph_fires_the_torch_heads_spikes_and_counts_them(exported: tuple[Path, Path]) -> None:
    checkpoint, path = exported
    loaded = load_checkpoint(checkpoint, "full")
    model, config = loaded.model.eval(), loaded.config
    digits = normalized_images(config, load_dataset("mnist", subset=(1, TEST_IMAGES)).test.images)
    noise = torch.randn(56, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = torch.cat([digits, noise])
    with torch.inference_mode(), ActivityMonitor(model.head, config.time_steps, CountMode.COMPLETE) as monitor:
        spikes = model.head(x)
    onnx_spikes, layer_spikes = session(path).run(None, {INPUT: x.numpy()})

    assert onnx_spikes.dtype == np.uint8 and onnx_spikes.shape == tuple(spikes.shape)
    assert set(np.unique(onnx_spikes)) <= {0, 1}
    flips = int(np.count_nonzero(onnx_spikes != spikes.to(torch.uint8).numpy()))
    assert flips <= MAX_FLIPS * spikes.numel(), f"{flips} of {spikes.numel()} bits differ"
    # the labels the tail gives each head's spikes: a flip or two moves a logit by far less than a margin
    with torch.inference_mode():
        by_torch = model.tail(spikes).argmax(1)
        by_onnx = model.tail(torch.from_numpy(onnx_spikes).float()).argmax(1)
    assert int((by_torch != by_onnx).sum()) <= 1

    # the graph's per-conv counts against the hooks' sums, conv by conv: equal but where a spike flipped inside
    hooked = torch.stack([layer.spikes for layer in monitor.layers if layer.role is not ConvRole.STEM], dim=1)
    assert layer_spikes.shape == tuple(hooked.shape)
    assert np.abs(layer_spikes - hooked.numpy()).sum() <= MAX_FLIPS * spikes.numel() * len(monitor.layers)
    # and the energy from them, through the exported table, against the monitor's own: the same where every conv
    # of an image saw the same spikes, close where a flip inside changed what the convs after it saw
    same = (layer_spikes == hooked.numpy()).all(axis=1)
    assert same.mean() >= 0.95, f"{int((~same).sum())} of {len(same)} images"
    head = read_exported_head(path)
    for mode in CountMode:
        monitor.mode = mode
        for agree, by_graph, by_hooks in zip(same, head.energy(layer_spikes, mode), monitor.estimates(), strict=True):
            expected = by_hooks.to_dict() if agree else pytest.approx(by_hooks.to_dict(), rel=1e-2)
            assert by_graph.to_dict() == expected


def test_the_graph_carries_its_checkpoint_and_energy_table(exported: tuple[Path, Path]) -> None:
    checkpoint, path = exported
    head = read_exported_head(path)
    stored = read_checkpoint_info(checkpoint)
    assert head.checkpoint.fingerprint == stored.fingerprint and head.checkpoint.info_verified
    assert head.checkpoint.config == stored.config  # arch, split point, T, input style, the codec's tables
    assert head.checkpoint.info == stored.info  # accuracy, the `uncertain` calibration
    # the table: every conv of the head in the order it runs, as the hooks see it on a real forward
    loaded = load_checkpoint(checkpoint, "head")
    with torch.inference_mode(), ActivityMonitor(loaded.model.eval(), stored.config.time_steps) as monitor:
        loaded.model(torch.zeros(1, 3, 32, 32))
    assert [(a.name, a.role, a.flops, a.input_neurons) for a in head.layers] == [
        (a.name, a.role, a.flops, a.input_neurons) for a in monitor.layers
    ]
    assert head.layers[0].role is ConvRole.STEM and head.layers[-1].role is ConvRole.ENCODER


def test_any_batch_size_runs(exported: tuple[Path, Path]) -> None:
    checkpoint, path = exported
    config = read_checkpoint_info(checkpoint).config
    t, c, h, w = config.spike_shape
    run = session(path)
    for batch in (1, 5):
        spikes, layer_spikes = run.run(None, {INPUT: np.zeros((batch, 3, 32, 32), np.float32)})
        assert spikes.shape == (t, batch, c, h, w) and layer_spikes.shape[0] == batch


def test_what_is_not_an_exported_head_is_refused(tmp_path: Path) -> None:
    not_onnx = tmp_path / "head.onnx"
    not_onnx.write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="not an ONNX model"):
        read_exported_head(not_onnx)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_exported_head(tmp_path / "missing.onnx")
    # a valid ONNX file without the head's metadata
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(not_onnx))
    with pytest.raises(CheckpointError, match="not an exported SpikeBottleNet head"):
        read_exported_head(not_onnx)


def test_the_metadata_is_the_checkpoints_own(exported: tuple[Path, Path]) -> None:
    checkpoint, path = exported
    stored = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    with safe_open(str(checkpoint), framework="pt") as f:
        assert {k: stored[k] for k in f.metadata()} == f.metadata()
    assert json.loads(stored["spikebottlenet.onnx_head"])["opset"] == 20
