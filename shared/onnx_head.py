"""A split checkpoint's head as an ONNX graph, for a device that runs it without torch (onnxruntime).

``sbn export onnx`` writes the head and its encoder as one graph (shared/onnx_export.py):

    image [B, 3, H, W] float32  ->  spikes [T, B, C', H', W'] uint8     what the device sends
                                    layer_spikes [B, L] float32         the spikes into each spiking conv, over T

- T is unrolled: the stem repeats the image T times, every LIF is the step-by-step reference of
  shared/neuron.py (charge, fire, reset as elementwise ops), and every tdBN runs in eval mode on its
  running statistics (ONNX BatchNormalization, which the exporter's optimizer may fold into a conv).
- ``layer_spikes`` are ActivityMonitor's counts (shared/activity_monitor.py), in the order the L convs run, so a
  runtime computes the device's energy (``ExportedHead.energy``, through shared/energy.py's ``estimate_energy``)
  from the spikes its own graph fired. The stem, on the real-valued image, has no count; its MACs are in the table.
- The graph's metadata is the checkpoint's own (config with the codec tables, digests, fingerprint,
  training info with the ``uncertain`` calibration), under the same keys, so ``checkpoint_info_from_metadata``
  reads it as it reads a checkpoint's, plus ``spikebottlenet.onnx_head``: the energy table of the L + 1 convs.

This module is what a device reads the graph with, and imports no torch: export needs torch, onnx and onnxscript;
reading the metadata back needs only onnxruntime, which runs it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint_metadata import CheckpointError, CheckpointInfo, checkpoint_info_from_metadata
from .energy import ConvLayer, ConvRole, CountMode, EnergyEstimate, estimate_energy

OPSET = 20
HEAD_KEY = "spikebottlenet.onnx_head"  # the metadata entry the exporter adds to the checkpoint's own
HEAD_FORMAT = "spikebottlenet-onnx-head/1"
INPUT, SPIKES, LAYER_SPIKES = "image", "spikes", "layer_spikes"


@dataclass(frozen=True)
class ExportedHead:
    """An exported head's metadata: its checkpoint's, and what each of its convs is to the energy accounting."""

    checkpoint: CheckpointInfo
    layers: tuple[ConvLayer, ...]  # every conv in the order it runs

    def energy(self, layer_spikes: np.ndarray, mode: CountMode | str = CountMode.PAPER) -> list[EnergyEstimate]:
        """One EnergyEstimate per image from the graph's ``layer_spikes`` [B, L]."""
        return estimate_energy(self.layers, layer_spikes, self.checkpoint.config.time_steps, CountMode(mode))

    def metadata(self) -> dict[str, str]:
        """The graph's own metadata entry (the checkpoint's entries travel beside it, as stored)."""
        table = [
            {"name": layer.name, "role": layer.role.value, "flops": layer.flops, "input_neurons": layer.input_neurons}
            for layer in self.layers
        ]
        return {HEAD_KEY: json.dumps({"format": HEAD_FORMAT, "opset": OPSET, "layers": table})}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], path: Path) -> ExportedHead:
        """Read back what ``export_head`` (shared/onnx_export.py) wrote; CheckpointError names what is missing or
        malformed."""
        try:
            head = json.loads(metadata[HEAD_KEY])
            if head.get("format") != HEAD_FORMAT:
                raise ValueError(f"format {head.get('format')!r}, expected {HEAD_FORMAT!r}")
            layers = tuple(
                ConvLayer(d["name"], ConvRole(d["role"]), int(d["flops"]), int(d["input_neurons"]))
                for d in head["layers"]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path} is not an exported SpikeBottleNet head ({type(e).__name__}: {e})") from None
        return cls(checkpoint_info_from_metadata(metadata, path), layers)


def read_exported_head(path: str | os.PathLike) -> ExportedHead:
    """The metadata of an exported head, read by onnxruntime without running anything."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported head {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types, one per failure, none documented as a base
        raise CheckpointError(f"{path} is not an ONNX model onnxruntime can load: {e}") from None
    return ExportedHead.from_metadata(session.get_modelmeta().custom_metadata_map, path)
