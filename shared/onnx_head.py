"""A split checkpoint's head as an ONNX graph, for a device that runs it without torch (onnxruntime).

``sbn export onnx`` writes the head and its encoder as one graph:

    image [B, 3, H, W] float32  ->  spikes [T, B, C', H', W'] uint8     what the device sends
                                    layer_spikes [B, L] float32         the spikes into each spiking conv, over T

- T is unrolled: the stem repeats the image T times, every LIF is the step-by-step reference of
  shared/neuron.py (charge, fire, reset as elementwise ops), and every tdBN runs in eval mode on its
  running statistics (ONNX BatchNormalization, which the exporter's optimizer may fold into a conv).
- ``layer_spikes`` are ActivityMonitor's counts (shared/energy.py), in the order the L convs run, so a
  runtime computes the device's energy (``ExportedHead.energy``, through ``estimate_energy``) from the
  spikes its own graph fired. The stem, on the real-valued image, has no count; its MACs are in the table.
- The graph's metadata is the checkpoint's own (config with the codec tables, digests, fingerprint,
  training info with the ``uncertain`` calibration), under the same keys, so ``checkpoint_info_from_metadata``
  reads it as it reads a checkpoint's, plus ``spikebottlenet.onnx_head``: the energy table of the L + 1 convs.

Export needs torch, onnx and onnxscript; reading the metadata back needs only onnxruntime, which runs it.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import (
    CheckpointError,
    CheckpointInfo,
    checkpoint_info_from_metadata,
    checkpoint_metadata,
    load_checkpoint,
)
from .energy import ActivityMonitor, ConvActivity, ConvRole, CountMode, EnergyEstimate, estimate_energy
from .neuron import use_fused_inference, use_fused_training
from .split_model import SplitHead

OPSET = 20
HEAD_KEY = "spikebottlenet.onnx_head"  # the metadata entry this module adds to the checkpoint's own
HEAD_FORMAT = "spikebottlenet-onnx-head/1"
INPUT, SPIKES, LAYER_SPIKES = "image", "spikes", "layer_spikes"


class HeadGraph(nn.Module):
    """What the exported graph computes: a head's spikes, and the spikes into each of its spiking convs."""

    def __init__(self, head: SplitHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # image: [B, 3, H, W] -> spikes [T, B, C', H', W'] uint8, layer_spikes [B, L]
        with ActivityMonitor(self.head, self.head.time_steps, CountMode.COMPLETE) as monitor:
            spikes = self.head(image)
        counts = [layer.spikes for layer in monitor.layers if layer.spikes is not None]
        return spikes.to(torch.uint8), torch.stack(counts, dim=1)


@dataclass(frozen=True)
class ExportedHead:
    """An exported head's metadata: its checkpoint's, and what each of its convs is to the energy accounting."""

    checkpoint: CheckpointInfo
    layers: tuple[ConvActivity, ...]  # every conv in the order it runs, with no spikes recorded

    def energy(self, layer_spikes: np.ndarray, mode: CountMode | str = CountMode.PAPER) -> list[EnergyEstimate]:
        """One EnergyEstimate per image from the graph's ``layer_spikes`` [B, L]."""
        counts = iter(torch.from_numpy(np.ascontiguousarray(layer_spikes.T)))  # one [B] per spiking conv
        layers = [
            ConvActivity(layer.name, layer.role, layer.flops, layer.input_neurons, next(counts))
            if layer.role is not ConvRole.STEM
            else layer
            for layer in self.layers
        ]
        return estimate_energy(layers, self.checkpoint.config.time_steps, CountMode(mode))

    def metadata(self) -> dict[str, str]:
        """The graph's own metadata entry (the checkpoint's entries travel beside it, as stored)."""
        table = [
            {"name": layer.name, "role": layer.role.value, "flops": layer.flops, "input_neurons": layer.input_neurons}
            for layer in self.layers
        ]
        return {HEAD_KEY: json.dumps({"format": HEAD_FORMAT, "opset": OPSET, "layers": table})}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], path: Path) -> ExportedHead:
        """Read back what ``export_head`` wrote; CheckpointError names what is missing or malformed."""
        try:
            head = json.loads(metadata[HEAD_KEY])
            if head.get("format") != HEAD_FORMAT:
                raise ValueError(f"format {head.get('format')!r}, expected {HEAD_FORMAT!r}")
            layers = tuple(
                ConvActivity(d["name"], ConvRole(d["role"]), int(d["flops"]), int(d["input_neurons"]))
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


def export_head(checkpoint: str | os.PathLike, out: str | os.PathLike) -> ExportedHead:
    """Write the head of split ``checkpoint`` to ``out`` as ONNX (the graph above); returns its metadata."""
    import onnx

    metadata = checkpoint_metadata(checkpoint)
    loaded = load_checkpoint(checkpoint, "head")
    head = loaded.model.eval().requires_grad_(False)
    # The step-by-step reference, as plain tensor operations: the fused passes are compiled loops and
    # autograd Functions, which the exporter cannot trace.
    use_fused_inference(head, False)
    use_fused_training(head, False)
    graph = HeadGraph(head).eval()
    size = loaded.config.backbone.image_size
    example = torch.zeros(2, 3, size, size)
    with ActivityMonitor(head, head.time_steps, CountMode.COMPLETE) as monitor, torch.no_grad():
        head(example[:1])
    exported = ExportedHead(
        loaded.checkpoint, tuple(ConvActivity(a.name, a.role, a.flops, a.input_neurons) for a in monitor.layers)
    )
    # Traced with autograd on (nothing requires a gradient): without it SpikeConv2d picks batch-invariant
    # ATen-internal CPU kernels (shared/layers.py) that the exporter cannot trace; either way a conv is an ONNX Conv.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed": not needed here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the exporter's own use of a deprecated pytree API
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[SPIKES, LAYER_SPIKES],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    assert program is not None  # with no file to write to, the exporter returns the program
    model = program.model_proto
    # the exporter annotates every node and value with its Python stack trace and module path: most of the file's
    # bytes, and this machine's paths
    for node in model.graph.node:
        del node.metadata_props[:]
    for value_info in model.graph.value_info:
        del value_info.metadata_props[:]
    for key, value in {**metadata, **exported.metadata()}.items():
        model.metadata_props.add(key=key, value=value)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return exported
