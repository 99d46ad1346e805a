"""``sbn export nir``: the head as a NIR graph, run by an independent SNN library (snnTorch's NIR import) against
the torch head it came from.

snnTorch builds its own convs and ``Leaky`` neurons from the file and runs them one time step per call, with
its own state; the torch head runs as the device runs it (the fused inference pass, multi-step). Bit for bit
they may differ only where a membrane potential lies within float32 rounding of the threshold: the graph has
the tdBN folded into its convs (one rounding of weight * scale, where the head rounds the conv's sum and then
its affine map). The tests measure how often, and explain every such bit: fed the head's own input spikes,
each LIF whose spikes differ first at a neuron sits there within rounding of the threshold, by a float64
evaluation of the graph written here.

snnTorch 1.0's importer cannot build a grouped (depthwise) conv (it takes weight.shape[1] for the input
channels), so the MobileNet's graph is imported with its depthwise convs written dense (``without_groups``);
a test checks that rewrite against the grouped conv in float64.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import nir
import numpy as np
import pytest
import snntorch
import snntorch.utils
import torch
import torch.nn.functional as F
from safetensors import safe_open
from snntorch.import_nir import import_from_nir

from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import CheckpointError
from spikebottlenet.shared.lif_config import LIFConfig
from spikebottlenet.shared.neuron import LIF
from spikebottlenet.shared.nir_head import INPUT, OUTPUT, NirLIFParameters, read_nir_head, without_groups
from spikebottlenet.training.datasets import load_dataset
from tests.conftest import exported_demo_head, normalized_images

# snnTorch runs each head on 256 images, and a float64 graph explains its flips: about 3 minutes
pytestmark = pytest.mark.slow

MODELS = [("spiking_resnet50", 3), ("spiking_resnet50", 8), ("spiking_resnet50", 16), ("spiking_mobilenetv2", 8)]
TEST_IMAGES = 200
RANDOM_IMAGES = 56
# A membrane potential "within rounding" of the threshold: both runtimes compute it in float32 from the same
# terms, each off by a few ulps of the sum of the terms' magnitudes (the conv's |w| * |x|, |bias|, the shortcut,
# tau * |u|). 64 ulps of that sum is generous for sums of a few hundred terms and still rare: the share of all
# neuron-steps this close to the threshold is printed and bounded below.
ROUNDING_ULPS = 64
# Bits of the head's output that differ: measured 0-2 per model on these images; a graph that computed
# anything else would differ in a share of ~0.1-0.5
MAX_FLIPS = 1e-3


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: f"{m[0]}-{m[1]}")
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return exported_demo_head("nir", *request.param, tmp_path_factory.mktemp("nir"))


def snntorch_net(graph: nir.NIRGraph) -> torch.nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints as it goes
        return import_from_nir(without_groups(graph))


def run_snntorch(
    net: torch.nn.Module, x: torch.Tensor, time_steps: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """snnTorch's output spikes [T, B, C', H', W'] for the image x repeated T times, from rest, and each of its
    Leaky layers' spikes [T, B, C, H, W] by (sanitized) node name."""
    recorded: dict[str, list[torch.Tensor]] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: recorded.setdefault(name, []).append(o.clone()))
        for name, module in net.named_modules()
        if isinstance(module, snntorch.Leaky)
    ]
    snntorch.utils.reset(net)
    state, steps = None, []
    with torch.no_grad():
        for _ in range(time_steps):
            spikes, state = net(x, state)
            steps.append(spikes)
    for hook in hooks:
        hook.remove()
    return torch.stack(steps), {name: torch.stack(s) for name, s in recorded.items()}


def run_head(head: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The torch head's spikes [T, B, C', H', W'] and every LIF's [T, B, C, H, W], by the NIR node name."""
    recorded: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, i, o, name=name.removeprefix("blocks."): recorded.__setitem__(name, o.float())
        )
        for name, module in head.named_modules()
        if isinstance(module, LIF)
    ]
    with torch.inference_mode():
        spikes = head(x)
    for hook in hooks:
        hook.remove()
    return spikes.float(), recorded


def conv_arguments(conv: nir.Conv2d) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """stride, padding, dilation as F.conv2d takes them (a graph read from a file holds numpy arrays)."""
    return tuple(tuple(int(v) for v in np.atleast_1d(a)) for a in (conv.stride, conv.padding, conv.dilation))  # type: ignore[return-value]


def unexplained_flips(
    graph: nir.NIRGraph, x: torch.Tensor, ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], v_th: float
) -> tuple[list[str], int, int, int]:
    """Every bit where a LIF of snnTorch's run differs from the head's, though the LIF's inputs were the head's
    own: each must be a threshold tie, the float64 membrane (fed the head's input spikes, reset by the head's
    spikes) within ``ROUNDING_ULPS`` of the terms' magnitude of v_th at the neuron's first differing step.
    Returns the bits that are not (as descriptions), the bits that are, the bits downstream of a flip, and the
    neuron-steps within rounding of the threshold at all."""
    unexplained: list[str] = []
    ties = downstream = near = 0
    sources = {name: [s for s, d in graph.edges if d == name] for name in graph.nodes}

    def spikes_into(node: str) -> tuple[torch.Tensor, torch.Tensor]:  # float64 [T, B, C, H, W], and |terms| alike
        value = x.double().expand(len(next(iter(ours.values()))), *x.shape) if node == INPUT else ours[node].double()
        return value, value.abs()

    for name, node in graph.nodes.items():
        if not isinstance(node, nir.LIF):
            continue
        current, magnitude = 0.0, 0.0
        inputs = []  # the LIFs (or the image) whose spikes reach this one
        for source in sources[name]:
            conv = graph.nodes[source]
            if isinstance(conv, nir.Conv2d):
                (spiking,) = sources[source]
                value, size = spikes_into(spiking)
                w, b = torch.from_numpy(conv.weight).double(), torch.from_numpy(conv.bias).double()
                t, batch = value.shape[:2]
                args = (*conv_arguments(conv), int(conv.groups))
                current = current + F.conv2d(value.flatten(0, 1), w, b, *args).unflatten(0, (t, batch))
                magnitude = magnitude + F.conv2d(size.flatten(0, 1), w.abs(), b.abs(), *args).unflatten(0, (t, batch))
                inputs.append(spiking)
            else:  # an identity shortcut: the block's input spikes, added as they are
                value, size = spikes_into(source)
                current, magnitude = current + value, magnitude + size
                inputs.append(source)
        key = name.replace(".", "_")
        mine, other = ours[name], theirs[key]
        # images whose inputs to this LIF were the head's own in snnTorch's run too
        clean = torch.ones(mine.shape[1], dtype=torch.bool)
        for source in inputs:
            if source != INPUT:
                clean &= (theirs[source.replace(".", "_")] == ours[source]).flatten(2).all(-1).all(0)
        differs = mine != other  # [T, B, ...]
        downstream += int(differs[:, ~clean].sum())
        decay = 1 - 1 / float(node.r.flat[0])  # r = 1 / (1 - tau_d), shared/nir_head.py's mapping
        u = torch.zeros_like(current[0])
        earlier = torch.zeros_like(differs[0])  # the neuron differed at an earlier step: its state differs since
        for t in range(current.shape[0]):
            u_magnitude = decay * u.abs() + magnitude[t]
            u = decay * u + current[t]
            close = (u - v_th).abs() <= ROUNDING_ULPS * 2.0**-24 * u_magnitude
            near += int(close[clean].sum())
            first = differs[t] & ~earlier & clean[:, None, None, None]
            ties += int((first & close).sum())
            for index in (first & ~close).nonzero().tolist():
                unexplained.append(f"{name} step {t} at {index}: u = {u[tuple(index)].item():.9g}")
            earlier |= differs[t]
            u = u * (1 - mine[t].double())  # reset by the head's spikes: the membrane the head carries on with
    return unexplained, ties, downstream, near


def test_snntorch_fires_the_heads_spikes_and_every_difference_is_a_threshold_tie(
    exported: tuple[Path, Path],
) -> None:
    checkpoint, path = exported
    head_file = read_nir_head(path)
    loaded = load_checkpoint(checkpoint, "head")
    head, config = loaded.model.eval(), loaded.config
    digits = normalized_images(config, load_dataset("mnist", subset=(1, TEST_IMAGES)).test.images)
    noise = torch.randn(RANDOM_IMAGES, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = torch.cat([digits, noise])

    expected, ours = run_head(head, x)
    spikes, theirs = run_snntorch(snntorch_net(head_file.graph), x, head_file.time_steps)

    assert spikes.shape == expected.shape and set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert expected.any() and not expected.all()  # a head that fires, and not everywhere
    flips = int((spikes != expected).sum())
    assert flips <= MAX_FLIPS * expected.numel(), f"{flips} of {expected.numel()} bits differ"
    assert set(theirs) == {name.replace(".", "_") for name in ours}  # one Leaky per LIF of the head

    unexplained, ties, downstream, near = unexplained_flips(head_file.graph, x, ours, theirs, config.backbone.lif.v_th)
    print(f"{flips} output bits differ; in all layers {ties} ties, {downstream} downstream, {near} near-threshold")
    assert not unexplained, unexplained[:5]
    neuron_steps = sum(s.numel() for s in ours.values())
    assert near <= 1e-3 * neuron_steps  # "within rounding" is rare: the explanation is not a wide net


def test_the_lif_mapping_fires_and_resets_as_our_neuron() -> None:
    """One NIR LIF, read by snnTorch, against our LIF's step-by-step reference and the formula written out, on
    currents that put the membrane exactly on the threshold, one float32 below it, and anywhere."""
    lif = LIF(LIFConfig())
    lif.fused_inference = False
    shape = (3, 4, 5)
    params = NirLIFParameters.of(lif, shape)
    graph = nir.NIRGraph(
        nodes={
            INPUT: nir.Input(input_type={"input": np.array(shape)}),
            "lif": nir.LIF(tau=params.tau, r=params.r, v_leak=params.v_leak, v_threshold=params.v_threshold),
            OUTPUT: nir.Output(output_type={"output": np.array(shape)}),
        },
        edges=[(INPUT, "lif"), ("lif", OUTPUT)],
    )
    just_below = np.nextafter(np.float32(0.5), np.float32(0))
    current = torch.randn(6, 2, *shape, generator=torch.Generator().manual_seed(1))  # [T, B, C, H, W]
    current[0, 0, 0] = 0.5  # fires at once
    current[0, 0, 1] = float(just_below)  # does not
    current[:2, 1, 0] = torch.tensor([0.4, 0.4]).view(2, 1, 1)  # 0.25 * 0.4 + 0.4 = 0.5: fires at the second step
    current[:3, 1, 1] = torch.tensor([0.6, 0.1, 0.45]).view(3, 1, 1)  # fires, resets, 0.1, 0.475

    net = snntorch_net(graph)
    snntorch.utils.reset(net)
    state, theirs = None, []
    with torch.no_grad():
        for t in range(current.shape[0]):
            s, state = net(current[t], state)
            theirs.append(s)
    # the formula of shared/neuron.py, in float32 numpy
    u, formula = np.zeros(current.shape[1:], dtype=np.float32), []
    for t in range(current.shape[0]):
        u = np.float32(0.25) * u + current[t].numpy()
        fired = (u >= np.float32(0.5)).astype(np.float32)
        formula.append(fired)
        u = u * (1 - fired)
    with torch.no_grad():
        reference = lif(current)
    assert torch.equal(torch.stack(theirs), reference)
    assert np.array_equal(np.stack(formula), reference.numpy())
    assert reference[0, 0, 0].all() and not reference[0, 0, 1].any()
    assert reference[:2, 1, 0].tolist() == [[[0.0] * 5] * 4, [[1.0] * 5] * 4]
    assert reference[:3, 1, 1].tolist() == [[[1.0] * 5] * 4, [[0.0] * 5] * 4, [[0.0] * 5] * 4]


def test_writing_depthwise_convs_dense_changes_nothing(exported: tuple[Path, Path]) -> None:
    head_file = read_nir_head(exported[1])
    graph = head_file.graph
    dense = without_groups(graph)
    grouped = [name for name, node in graph.nodes.items() if isinstance(node, nir.Conv2d) and node.groups > 1]
    for name in grouped:
        g, d = graph.nodes[name], dense.nodes[name]
        x = torch.randint(0, 2, (3, g.weight.shape[1] * g.groups, 8, 8), generator=torch.Generator().manual_seed(0))
        args = conv_arguments(g)
        bias = torch.from_numpy(g.bias).double()
        a = F.conv2d(x.double(), torch.from_numpy(g.weight).double(), bias, *args, int(g.groups))
        b = F.conv2d(x.double(), torch.from_numpy(d.weight).double(), bias, *args, 1)
        assert d.groups == 1 and torch.equal(a, b)
    assert bool(grouped) == (head_file.checkpoint.config.backbone.arch == "spiking_mobilenetv2")


def test_the_graph_is_the_heads_layers_and_carries_its_checkpoint(exported: tuple[Path, Path]) -> None:
    checkpoint, path = exported
    head_file = read_nir_head(path)
    loaded = load_checkpoint(checkpoint, "head")
    assert head_file.checkpoint.fingerprint == loaded.checkpoint.fingerprint
    assert head_file.time_steps == loaded.config.time_steps and head_file.dt == 1e-4
    graph = head_file.graph
    lifs = {name for name, node in graph.nodes.items() if isinstance(node, nir.LIF)}
    assert lifs == {name.removeprefix("blocks.") for name, m in loaded.model.named_modules() if isinstance(m, LIF)}
    convs = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(isinstance(node, nir.Conv2d) for node in graph.nodes.values()) == len(convs)
    # a residual block's LIF sums two edges (the branch and the shortcut), every other LIF takes one
    into = {name: sum(d == name for _, d in graph.edges) for name in lifs}
    blocks = loaded.model.blocks
    for key, block in blocks.items():
        has_shortcut = getattr(block, "has_shortcut", True)  # every ResNet block has one
        assert into[f"{key}.lif"] == (2 if has_shortcut else 1)
    assert graph.nodes[OUTPUT].output_type["output"].tolist() == list(loaded.config.spike_shape[1:])
    with safe_open(str(checkpoint), framework="pt") as f:
        stored = {k: v.decode() if isinstance(v, bytes) else v for k, v in graph.metadata.items()}
        assert {k: stored[k] for k in f.metadata()} == f.metadata()
    assert json.loads(stored["spikebottlenet.nir_head"]) == {
        "format": "spikebottlenet-nir-head/1",
        "dt": 1e-4,
        "time_steps": loaded.config.time_steps,
    }


def test_what_is_not_an_exported_head_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_nir_head(tmp_path / "missing.nir")
    not_nir = tmp_path / "head.nir"
    not_nir.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    with pytest.raises(CheckpointError, match="is not a NIR graph"):
        read_nir_head(not_nir)
    plain = tmp_path / "plain.nir"
    shape = np.array([2])
    nir.write(
        str(plain),
        nir.NIRGraph(
            nodes={INPUT: nir.Input({"input": shape}), OUTPUT: nir.Output({"output": shape})}, edges=[(INPUT, OUTPUT)]
        ),
    )
    with pytest.raises(CheckpointError, match="not an exported SpikeBottleNet head"):
        read_nir_head(plain)
