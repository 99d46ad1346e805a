"""A device without torch: what it imports to read its model, encode its spikes, damage them on an experimental link
and count its energy (shared/codec.py, channel.py, energy.py, onnx_head.py, rpc/wire.py) runs in a process where
importing torch fails, and what it sends is decoded here by the edge's path (shared/spike_tensors.py), bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from spikebottlenet.shared.checkpoint_metadata import DEFAULT_MODEL_DIR, read_checkpoint_info
from spikebottlenet.shared.codec import Codec
from spikebottlenet.shared.energy import E_AC_45NM_PJ, E_MAC_45NM_PJ, E_SYOP_ROLLS_PJ, PJ_PER_MJ
from spikebottlenet.shared.rpc.wire import CODEC_FROM_WIRE
from spikebottlenet.shared.spike_tensors import decode_received

CHECKPOINT = DEFAULT_MODEL_DIR / "mnist_rb8.safetensors"  # shipped, with its fitted entropy tables
IMAGES = 2

# The device's side, run as a script: torch is blocked before anything is imported, so an import of it anywhere
# below (direct or through another module) raises ImportError. It writes what it sent to an .npz.
DEVICE = r"""
import sys

sys.modules["torch"] = None

import json
from pathlib import Path

import numpy as np

from spikebottlenet.shared.channel import parse_channel
from spikebottlenet.shared.checkpoint_metadata import checkpoint_metadata
from spikebottlenet.shared.codec import encode
from spikebottlenet.shared.energy import CountMode
from spikebottlenet.shared.onnx_head import HEAD_FORMAT, HEAD_KEY, ExportedHead
from spikebottlenet.shared.rpc.wire import CODEC_TO_WIRE

checkpoint, shape, energy_table, layer_spikes, out = sys.argv[1:]
# An exported head's metadata, as its graph carries it: the checkpoint's own entries and the energy table of its convs
head_entry = json.dumps({"format": HEAD_FORMAT, "layers": json.loads(energy_table)})
head = ExportedHead.from_metadata({**checkpoint_metadata(checkpoint), HEAD_KEY: head_entry}, Path(checkpoint))
model = head.checkpoint.config.spike_model()

# [T, B, C', H', W'] bool, as an exported head returns them
spikes = np.random.default_rng(0).random(json.loads(shape)) < 0.15
sent = {"spikes": spikes}
for name, array, options in [
    ("raw", spikes, {"assume_binary": True}),
    ("sparse", spikes.astype(np.uint8), {}),  # uint8 0/1, through the binary check
    ("entropy", spikes, {"assume_binary": True, "model": model, "chunks": 2}),
]:
    codec, payload = encode(array, name, **options)
    sent[name], sent[f"{name}_wire"] = np.frombuffer(payload, np.uint8), CODEC_TO_WIRE[codec]
damaged = parse_channel("bsc:0.02").apply(sent["raw"].tobytes(), np.random.default_rng(1)).payload
sent["damaged_raw"] = np.frombuffer(damaged, np.uint8)

for mode in CountMode:  # from the spike counts the graph would return, [B, L]
    estimates = head.energy(np.array(json.loads(layer_spikes), dtype=np.float32), mode)
    sent[f"energy_{mode.value}"] = np.array([
        [e.flops, e.syops, e.firing_rate, e.device_45nm_mj, e.device_rolls_mj, e.ann_baseline_45nm_mj]
        for e in estimates
    ])

loaded = sorted(name for name, module in sys.modules.items() if module is not None and name.split(".")[0] == "torch")
assert not loaded, loaded
np.savez(out, **sent)
"""

# A head of three convs: the stem on the image, a block conv and the encoder on spikes. Per image, per time step:
STEM_FLOPS, BLOCK_FLOPS, ENCODER_FLOPS = 864, 1152, 36  # MACs
BLOCK_NEURONS, ENCODER_NEURONS = 32, 16  # C * H * W of each conv's input
ENERGY_TABLE = [
    {"name": "stem.conv", "role": "stem", "flops": STEM_FLOPS, "input_neurons": 3 * 4 * 4},
    {"name": "blocks.rb1.conv1.conv", "role": "block", "flops": BLOCK_FLOPS, "input_neurons": BLOCK_NEURONS},
    {"name": "encoder.conv", "role": "encoder", "flops": ENCODER_FLOPS, "input_neurons": ENCODER_NEURONS},
]
# the spikes into the block conv and the encoder over the T steps: [B, L], one row per image
LAYER_SPIKES = [[4, 8], [16, 0]]


def hand_count(block_spikes: int, encoder_spikes: int, time_steps: int, complete: bool) -> list[float]:
    """One image's EnergyEstimate fields, from paper section 4.3 written out: SyOPs_l = spikes_l / neurons_l *
    FLOPs_l, firing rate = spikes / (T * neurons); paper mode counts the block conv alone, complete mode adds the
    stem (MACs, at 4.6 pJ) and the encoder."""
    syops = block_spikes / BLOCK_NEURONS * BLOCK_FLOPS
    spikes, neurons, flops, macs = block_spikes, BLOCK_NEURONS, BLOCK_FLOPS, 0
    if complete:
        syops += encoder_spikes / ENCODER_NEURONS * ENCODER_FLOPS
        spikes, neurons = spikes + encoder_spikes, neurons + ENCODER_NEURONS
        flops, macs = flops + STEM_FLOPS + ENCODER_FLOPS, STEM_FLOPS
    return [
        flops,
        syops,
        spikes / (time_steps * neurons),
        (syops * E_AC_45NM_PJ + macs * E_MAC_45NM_PJ) / PJ_PER_MJ,
        (syops * E_SYOP_ROLLS_PJ + macs * E_MAC_45NM_PJ) / PJ_PER_MJ,
        flops * E_MAC_45NM_PJ / PJ_PER_MJ,
    ]


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """What the torch-free device sent for ``IMAGES`` images of the shipped checkpoint's spike shape."""
    time_steps, *rest = read_checkpoint_info(CHECKPOINT).config.spike_shape
    out = tmp_path_factory.mktemp("device") / "sent.npz"
    shape = [time_steps, IMAGES, *rest]
    arguments = [str(CHECKPOINT), json.dumps(shape), json.dumps(ENERGY_TABLE), json.dumps(LAYER_SPIKES), str(out)]
    done = subprocess.run([sys.executable, "-c", DEVICE, *arguments], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with np.load(out) as sent:
        return dict(sent)


@pytest.mark.parametrize("codec", list(Codec))
def test_the_edge_decodes_what_a_device_without_torch_encoded(sent: dict[str, np.ndarray], codec: Codec) -> None:
    spikes = sent["spikes"]
    assert spikes.dtype == np.bool_ and spikes.shape[1] == IMAGES and 0 < spikes.mean() < 1
    used = CODEC_FROM_WIRE[int(sent[f"{codec.value}_wire"])]
    assert used is codec  # entropy coded, not sent raw as a frame the model codes longer than raw would be
    model = read_checkpoint_info(CHECKPOINT).config.spike_model()
    # as edge/tail_runner.py decodes a frame: bools
    received = decode_received(sent[codec.value].tobytes(), spikes.shape, used, dtype=torch.bool, model=model)
    assert received.chunks == (2 if codec is Codec.ENTROPY else 1) and received.erased_chunks == 0
    assert torch.equal(received.spikes, torch.from_numpy(spikes))


def test_a_device_without_torch_damages_its_payload_on_an_experimental_link(sent: dict[str, np.ndarray]) -> None:
    spikes, raw, damaged = sent["spikes"], sent["raw"], sent["damaged_raw"]
    flipped = np.unpackbits(raw ^ damaged, count=spikes.size).reshape(spikes.shape).astype(bool)
    assert 0 < flipped.mean() < 0.05  # bsc:0.02
    received = decode_received(damaged.tobytes(), spikes.shape, Codec.RAW, dtype=torch.bool)
    assert torch.equal(received.spikes, torch.from_numpy(spikes ^ flipped))  # a flipped bit is one wrong spike


@pytest.mark.parametrize("complete", [False, True])
def test_a_device_without_torch_counts_energy_as_the_paper_does(sent: dict[str, np.ndarray], complete: bool) -> None:
    estimates = sent["energy_complete" if complete else "energy_paper"]  # [B, 6]: EnergyEstimate's fields
    time_steps = read_checkpoint_info(CHECKPOINT).config.time_steps
    expected = [hand_count(block, encoder, time_steps, complete) for block, encoder in LAYER_SPIKES]
    np.testing.assert_allclose(estimates, expected, rtol=1e-12, atol=0)
