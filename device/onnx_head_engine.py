"""The head run by onnxruntime: a device without torch (``sbn device --runtime onnx``).

It serves heads exported by ``sbn export onnx`` (shared/onnx_head.py): one graph from the normalized
image to the spikes, T unrolled, that also returns the spikes into each spiking conv, so the energy
is computed from the spikes this graph fired, as ActivityMonitor computes it for the torch head. The
graph carries its checkpoint's metadata (fingerprint, config with codec tables, calibration), so the
edge pairs it with the same tail as the checkpoint's own head.

The graph runs all T steps in one call: it has no state to carry between calls, so it does not stream.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime

from spikebottlenet.shared.energy import CountMode, EnergyEstimate
from spikebottlenet.shared.onnx_head import INPUT, LAYER_SPIKES, SPIKES, ExportedHead, read_exported_head


class OnnxHead:
    """An exported head in an onnxruntime session on the CPU execution provider."""

    runtime = "onnx"

    def __init__(self, session: onnxruntime.InferenceSession, exported: ExportedHead, energy_mode: CountMode | str):
        self.session = session
        self.exported = exported
        self.checkpoint = exported.checkpoint
        self.energy_mode = CountMode(energy_mode)

    @classmethod
    def load(cls, path: str | os.PathLike, energy_mode: CountMode | str, threads: int = 1) -> OnnxHead:
        exported = read_exported_head(path)  # CheckpointError if it is not an exported head
        options = onnxruntime.SessionOptions()
        # one thread per process by default, as the torch runtime (shared/torch_runtime.py): an edge and a device on
        # one small machine must not each take every core
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return cls(session, exported, energy_mode)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[EnergyEstimate]]:
        """Normalized images [B, 3, H, W] float32 -> their spikes [T, B, C', H', W'] bool and one energy estimate per
        image, from the spikes into each conv that the graph counted [B, L]."""
        spikes, layer_spikes = self.session.run([SPIKES, LAYER_SPIKES], {INPUT: x})
        return spikes.view(np.bool_), self.exported.energy(layer_spikes, self.energy_mode)  # uint8 0/1 as bools
