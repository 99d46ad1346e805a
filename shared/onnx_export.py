"""``sbn export onnx``: a split checkpoint's head written as the ONNX graph shared/onnx_head.py describes.

This is the torch side of that format: it traces the head with torch's exporter (which needs onnx and onnxscript
too). A device reads the graph back, and runs it, without torch (shared/onnx_head.py, onnxruntime).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .activity_monitor import ActivityMonitor
from .checkpoint import load_checkpoint
from .checkpoint_metadata import checkpoint_metadata
from .energy import ConvLayer, CountMode
from .neuron import use_fused_inference, use_fused_training
from .onnx_head import INPUT, LAYER_SPIKES, OPSET, SPIKES, ExportedHead
from .split_model import SplitHead


class HeadGraph(nn.Module):
    """What the exported graph computes: a head's spikes, and the spikes into each of its spiking convs."""

    def __init__(self, head: SplitHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # image: [B, 3, H, W] -> spikes [T, B, C', H', W'] uint8, layer_spikes [B, L]
        with ActivityMonitor(self.head, self.head.time_steps, CountMode.COMPLETE) as monitor:
            spikes = self.head(image)
        return spikes.to(torch.uint8), monitor.layer_spikes()


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
        loaded.checkpoint, tuple(ConvLayer(a.name, a.role, a.flops, a.input_neurons) for a in monitor.layers)
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
