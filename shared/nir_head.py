"""A split checkpoint's head as a NIR graph, for neuromorphic hardware.

NIR (the Neuromorphic Intermediate Representation, package ``nir`` 1.0) is what the toolchains of Loihi 2
(Lava), Xylo (Rockpool), Speck (Sinabs) and SpiNNaker2 read, and what snnTorch and Norse import. ``sbn export
nir`` writes the head and its encoder as one graph, one time step of it:

    input [3, H, W]                     the normalized image, the same at every step (direct encoding)
      -> stem.conv -> stem.lif
      -> per block, named as the model's modules (rb1.conv1, rb1.conv1.lif, ...):
           Conv2d -> LIF -> ... -> Conv2d ──────────────────┐
           the shortcut Conv2d, or the block's input spikes ─┴─> LIF    (NIR sums the edges into a node)
      -> encoder.conv -> encoder.lif -> output [C', H', W']   the spikes the device sends

The mapping, in one place:

- **tdBN** (eval: running statistics) is folded into the conv before it: weight * scale per output
  channel, bias = shift, computed in float64 and stored as float32, because NIR has no batch norm.
- **LIF.** Ours (shared/neuron.py) is discrete: u[t] = tau_d * u[t-1] * (1 - s[t-1]) + I[t], s[t] = u[t] >= v_th.
  NIR's is continuous, tau dv/dt = (v_leak - v) + r I, z = v > v_threshold, then v = v_reset; integrated by
  forward Euler with step dt, v[t] = (1 - dt/tau) v[t-1] + (dt/tau) r I[t]. They are the same with

      tau = dt / (1 - tau_d)    r = tau / dt = 1 / (1 - tau_d)    v_leak = 0    v_reset = 0
      v_threshold = the float32 just below v_th                   (NIR fires on >, ours on >=)

  for dt = ``DT`` = 1e-4 s, the step snnTorch's importer assumes (its beta = 1 - dt/tau); the graph's metadata
  states it. All four are float32, so a runtime that takes beta = 1 - dt/tau in float32 gets 0.25 exactly.
- **Time** is not in the graph: a runtime runs it ``time_steps`` times (metadata) on the same image, keeping
  each LIF's state between steps and clearing it between images. The encoder's spikes at step t are the
  device's step t.

The metadata is the checkpoint's own (config, digests, fingerprint, training info), under the same keys, so
``checkpoint_info_from_metadata`` reads it, plus ``spikebottlenet.nir_head``: the format, dt and T.

Equal to the torch head up to rounding, not bit for bit: folding rounds weight * scale once where the torch
head rounds the conv's sum and then its affine map, and a runtime's conv adds its terms in its own order. A
membrane potential within such a rounding of the threshold can fire in one and not in the other
(tests/shared/test_nir_head.py measures and bounds it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from .backbones.spiking_mobilenetv2_blocks import InvertedResidualBlock
from .backbones.spiking_resnet_blocks import SpikingBottleneckBlock
from .checkpoint import load_checkpoint
from .checkpoint_metadata import CheckpointError, CheckpointInfo, checkpoint_info_from_metadata, checkpoint_metadata
from .layers import ConvBN, ConvBNLIF, DirectEncodingStem
from .neuron import LIF
from .split_model import SplitHead
from .td_batch_norm import TdBatchNorm

DT = 1e-4  # seconds per time step, as the graph states it (see above)
HEAD_KEY = "spikebottlenet.nir_head"  # the metadata entry this module adds to the checkpoint's own
HEAD_FORMAT = "spikebottlenet-nir-head/1"
INPUT, OUTPUT = "input", "output"


@dataclass(frozen=True)
class NirLIFParameters:
    """Our LIF's (tau_d, v_th) as NIR's LIF parameters, per neuron of a layer [C, H, W], float32."""

    tau: np.ndarray
    r: np.ndarray
    v_leak: np.ndarray
    v_threshold: np.ndarray

    @classmethod
    def of(cls, lif: LIF, shape: tuple[int, ...], dt: float = DT) -> NirLIFParameters:
        def full(value: float) -> np.ndarray:
            return np.full(shape, value, dtype=np.float32)

        return cls(
            tau=full(dt / (1 - lif.tau)),
            r=full(1 / (1 - lif.tau)),
            v_leak=full(0.0),
            v_threshold=full(np.nextafter(np.float32(lif.v_th), np.float32(0))),
        )


def folded_conv(conv: nn.Conv2d, bn: TdBatchNorm, input_size: int) -> nir.Conv2d:
    """``bn(conv(x))`` in eval mode as one NIR Conv2d: the tdBN's per-channel scale and shift folded in (float64)."""
    weight = conv.weight.detach().double()  # [C_out, C_in / groups, k, k]
    scale, shift = bn.exact_affine()  # [C_out] each
    assert isinstance(conv.padding, tuple)  # the backbones give numbers, not "same"
    return nir.Conv2d(
        # nir 1.0 takes a conv's input channels to be weight.shape[1], C_in / groups for a grouped (depthwise)
        # conv, and then finds the graph's types inconsistent: a grouped conv's shapes are left undeclared
        input_shape=(input_size, input_size) if conv.groups == 1 else None,
        weight=(weight * scale[:, None, None, None]).float().numpy(),
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=shift.float().numpy(),
    )


class _Builder:
    """Nodes and edges of the graph, added in the order the head runs them."""

    def __init__(self, image_size: int) -> None:
        image = np.array([3, image_size, image_size])  # [C, H, W]
        self.nodes: dict[str, nir.NIRNode] = {INPUT: nir.Input(input_type={"input": image})}
        self.edges: list[tuple[str, str]] = []

    def conv(self, name: str, conv: nn.Conv2d, bn: TdBatchNorm, source: str, size: int) -> tuple[str, int]:
        """The folded conv fed by ``source`` (spikes of side ``size``); its name and its output's side."""
        assert isinstance(conv.padding, tuple)  # the backbones give numbers, not "same"
        (k, _), (stride, _), (padding, _) = conv.kernel_size, conv.stride, conv.padding
        self.nodes[name] = folded_conv(conv, bn, size)
        self.edges.append((source, name))
        return name, (size + 2 * padding - k) // stride + 1

    def conv_bn(self, name: str, layer: ConvBN, source: str, size: int) -> tuple[str, int]:
        return self.conv(name, layer.conv.module, layer.bn, source, size)

    def lif(self, name: str, lif: LIF, sources: list[str], shape: tuple[int, int, int]) -> str:
        """A LIF of ``shape`` [C, H, W] whose current is the sum of ``sources``."""
        p = NirLIFParameters.of(lif, shape)
        self.nodes[name] = nir.LIF(tau=p.tau, r=p.r, v_leak=p.v_leak, v_threshold=p.v_threshold)
        self.edges.extend((source, name) for source in sources)
        return name

    def conv_bn_lif(self, name: str, layer: ConvBNLIF, source: str, size: int) -> tuple[str, int]:
        conv, size = self.conv_bn(f"{name}.conv", layer, source, size)
        return self.lif(f"{name}.lif", layer.lif, [conv], (layer.conv.module.out_channels, size, size)), size

    def stem(self, stem: nn.Module, size: int) -> tuple[str, int]:
        if not isinstance(stem, DirectEncodingStem):
            raise TypeError(f"no NIR mapping for a {type(stem).__name__} stem")
        conv, size = self.conv("stem.conv", stem.conv, stem.bn, INPUT, size)
        return self.lif("stem.lif", stem.lif, [conv], (stem.conv.out_channels, size, size)), size

    def block(self, name: str, block: nn.Module, source: str, size: int) -> tuple[str, int]:
        """A residual block: its branch of convs and LIFs, the shortcut, and the LIF after their sum."""
        if isinstance(block, SpikingBottleneckBlock):
            x, out_size = self.conv_bn_lif(f"{name}.conv1", block.conv1, source, size)
            x, out_size = self.conv_bn_lif(f"{name}.conv2", block.conv2, x, out_size)
            branch, out_size = self.conv_bn(f"{name}.conv3", block.conv3, x, out_size)
            last = block.conv3
            shortcut = (
                self.conv_bn(f"{name}.shortcut", block.shortcut, source, size)[0]
                if isinstance(block.shortcut, ConvBN)
                else source
            )
            sources = [branch, shortcut]
        elif isinstance(block, InvertedResidualBlock):
            x, out_size = source, size
            if isinstance(block.expand, ConvBNLIF):
                x, out_size = self.conv_bn_lif(f"{name}.expand", block.expand, x, out_size)
            x, out_size = self.conv_bn_lif(f"{name}.depthwise", block.depthwise, x, out_size)
            branch, out_size = self.conv_bn(f"{name}.project", block.project, x, out_size)
            last = block.project
            sources = [branch, source] if block.has_shortcut else [branch]
        else:
            raise TypeError(f"no NIR mapping for a {type(block).__name__}")
        shape = (last.conv.module.out_channels, out_size, out_size)
        return self.lif(f"{name}.lif", block.lif, sources, shape), out_size

    def graph(self, metadata: dict[str, str]) -> nir.NIRGraph:
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)


def head_graph(head: SplitHead, metadata: dict[str, str] | None = None) -> nir.NIRGraph:
    """One time step of ``head`` (eval mode) as a NIR graph, the encoder's spikes its output."""
    size = head.config.backbone.image_size
    builder = _Builder(size)
    with torch.no_grad():
        x, size = builder.stem(head.stem, size)
        for key, block in head.blocks.items():
            x, size = builder.block(key, block, x, size)
        encoder, size = builder.conv("encoder.conv", head.encoder.conv.module, head.encoder.bn, x, size)
        spikes = builder.lif("encoder.lif", head.encoder.lif, [encoder], (head.encoder.bn.num_features, size, size))
    builder.nodes[OUTPUT] = nir.Output(output_type={"output": np.array([head.encoder.bn.num_features, size, size])})
    builder.edges.append((spikes, OUTPUT))
    return builder.graph(dict(metadata or {}))


@dataclass(frozen=True)
class ExportedNirHead:
    """A NIR head file read back: the graph, and the checkpoint it was exported from."""

    graph: nir.NIRGraph
    checkpoint: CheckpointInfo
    dt: float
    time_steps: int


def without_groups(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` with every grouped (depthwise) conv written as the dense conv it equals: each output channel's
    weights for the input channels outside its group are zeros. For an importer that reads a conv's input
    channels as weight.shape[1] (snnTorch 1.0's ``import_from_nir``, nirtorch 2.6's default map) and so cannot
    build a grouped one. Exact, at ``groups`` times the weights."""
    nodes = dict(graph.nodes)
    for name, node in graph.nodes.items():
        if isinstance(node, nir.Conv2d) and node.groups > 1:
            c_out, group_in = node.weight.shape[:2]
            group_out = c_out // node.groups
            weight = np.zeros((c_out, group_in * node.groups, *node.weight.shape[2:]), dtype=node.weight.dtype)
            for o in range(c_out):  # output channel o reads group o // group_out's input channels
                first = o // group_out * group_in
                weight[o, first : first + group_in] = node.weight[o]
            nodes[name] = nir.Conv2d(node.input_shape, weight, node.stride, node.padding, node.dilation, 1, node.bias)
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata), type_check=False)


def nir_head_metadata(time_steps: int) -> dict[str, str]:
    return {HEAD_KEY: json.dumps({"format": HEAD_FORMAT, "dt": DT, "time_steps": time_steps})}


def export_nir_head(
    checkpoint: str | os.PathLike, out: str | os.PathLike, dense_depthwise: bool = False
) -> ExportedNirHead:
    """Write the head of split ``checkpoint`` to ``out`` as a NIR graph (HDF5); returns what was written.
    ``dense_depthwise``: grouped convs written dense (``without_groups``), for importers that cannot read them."""
    loaded = load_checkpoint(checkpoint, "head")
    metadata = {**checkpoint_metadata(checkpoint), **nir_head_metadata(loaded.config.time_steps)}
    graph = head_graph(loaded.model.eval(), metadata)
    if dense_depthwise:
        graph = without_groups(graph)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(out), graph)
    return ExportedNirHead(graph, loaded.checkpoint, DT, loaded.config.time_steps)


def read_nir_head(path: str | os.PathLike) -> ExportedNirHead:
    """A NIR head file and its checkpoint's metadata; CheckpointError names what is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"NIR head {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        # without nir's type check: it would infer a grouped conv's input channels wrongly (folded_conv)
        graph = nir.read(str(path), type_check=False)
    except Exception as e:  # h5py and nir raise their own types (OSError, KeyError, ...), none documented as a base
        raise CheckpointError(f"{path} is not a NIR graph nir can read: {type(e).__name__}: {e}") from None
    metadata = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (graph.metadata or {}).items()}
    try:
        head = json.loads(metadata[HEAD_KEY])
        if head.get("format") != HEAD_FORMAT:
            raise ValueError(f"format {head.get('format')!r}, expected {HEAD_FORMAT!r}")
        dt, time_steps = float(head["dt"]), int(head["time_steps"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not an exported SpikeBottleNet head ({type(e).__name__}: {e})") from None
    return ExportedNirHead(graph, checkpoint_info_from_metadata(metadata, path), dt, time_steps)
