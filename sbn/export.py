"""``sbn export onnx|nir``: a split checkpoint's head for another runtime, checked after writing.

- ``onnx`` (shared/onnx_head.py): the head as an ONNX graph, for onnxruntime on a torch-free device;
- ``nir`` (shared/nir_head.py): the head as a NIR graph, for neuromorphic toolchains;
- ``verify FILE``: the check alone, of an exported head against a checkpoint (the one the edge serves, say).

The check runs the written file in an independent runtime (onnxruntime; snnTorch's NIR import) and the
checkpoint's head with torch, as the device runs it, on random images, and counts the spikes that differ. A few
may: the other runtime's convs add their float32 terms in another order than torch's (and NIR's have the tdBN
folded in), so a membrane potential within a rounding error of the threshold can fire in one and not in the
other (measured on MNIST's test split: docs/benchmarks.md). A graph that computes something else differs in a
large share of its bits; more than ``MAX_DIFFERING`` fails the export.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
from pathlib import Path

import numpy as np
import torch

from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.model_arguments import add_model_arguments, chosen_checkpoint
from spikebottlenet.shared.model_config import ModelConfig

CHECK_IMAGES = 32
MAX_DIFFERING = 1e-3  # of the bits: rounding flips measured at about 1e-5, a wrong graph at tens of percent


class ExportMismatch(SpikeBottleNetError):
    """The exported graph is another model's head, or its spikes differ from the torch head's."""


class MissingExporter(SpikeBottleNetError):
    """The format's extra is not installed."""


EXTRA_MODULES = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),  # torch's exporter, and the runtime that checks
    "nir": ("nir", "snntorch"),  # the format, and the independent library that checks
}


def require_extra(format: str) -> None:
    """MissingExporter naming the install command if a package the format needs cannot be imported."""
    for module in EXTRA_MODULES[format]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExporter(
                f"exporting to {format.upper()} needs the {module} package: pip install 'spikebottlenet[{format}]' "
                f"(from a checkout: pip install '.[{format}]')"
            ) from None


FORMATS = ("onnx", "nir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    onnx = formats.add_parser("onnx", help="the head and encoder as ONNX, for `onnxruntime` on a torch-free device")
    add_model_arguments(onnx, "export the head of")
    onnx.add_argument("--out", type=Path, help="the .onnx file to write (default: the checkpoint's name, .onnx)")
    nir = formats.add_parser("nir", help="the head and encoder as NIR, for neuromorphic hardware toolchains")
    add_model_arguments(nir, "export the head of")
    nir.add_argument("--out", type=Path, help="the .nir file to write (default: the checkpoint's name, .nir)")
    nir.add_argument(
        "--dense-depthwise",
        action="store_true",
        help="write grouped (depthwise) convs as the dense convs they equal, for importers that cannot read groups "
        "(snnTorch 1.0)",
    )
    verify = formats.add_parser(
        "verify", help="check an exported head (.onnx, .nir) against a checkpoint: the same model, the same spikes"
    )
    verify.add_argument("file", type=Path, help="the exported head; its suffix, .onnx or .nir, says its format")
    add_model_arguments(verify, "check the file against")


def run(args: argparse.Namespace) -> int:
    checkpoint = chosen_checkpoint(args)
    if args.format == "verify":
        format = args.file.suffix.removeprefix(".")
        if format not in FORMATS:
            raise ExportMismatch(f"{args.file}: name an exported head .onnx or .nir, as `sbn export` writes them")
        require_extra(format)
        check(format, args.file, checkpoint)
        return 0
    require_extra(args.format)
    out = args.out or Path(checkpoint.with_suffix(f".{args.format}").name)
    if args.format == "onnx":
        from spikebottlenet.shared.onnx_export import export_head

        export_head(checkpoint, out)
    else:
        from spikebottlenet.shared.nir_head import export_nir_head

        export_nir_head(checkpoint, out, args.dense_depthwise)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    check(args.format, out, checkpoint)
    return 0


def check(format: str, path: Path, checkpoint: Path) -> None:
    """Run the exported head at ``path`` in its independent runtime and the checkpoint's head with torch on the
    check images; ExportMismatch if it is another model's head, or its spikes differ more than rounding explains."""
    fingerprint, config, runtime, spikes = run_onnx(path) if format == "onnx" else run_nir(path)
    loaded = load_checkpoint(checkpoint, "head")
    if fingerprint != loaded.fingerprint:
        raise ExportMismatch(
            f"{path} is the head of model {fingerprint[:12]}, but {checkpoint} is model {loaded.fingerprint[:12]}: "
            "export the head from the checkpoint the edge serves"
        )
    with torch.inference_mode():
        expected = loaded.model.eval()(check_images(config)).to(torch.uint8).numpy()
    differ = int(np.count_nonzero(spikes != expected))
    print(
        f"check: {runtime} against the torch head of model {loaded.fingerprint[:12]} on {CHECK_IMAGES} random "
        f"images: {differ} of {spikes.size:,} bits differ"
    )
    if differ > MAX_DIFFERING * spikes.size:
        raise ExportMismatch(
            f"the exported head's spikes differ from the torch head's in {differ} of {spikes.size} bits, more than "
            "rounding explains"
        )


def check_images(config: ModelConfig) -> torch.Tensor:
    size = config.backbone.image_size
    return torch.randn(CHECK_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))  # [B, 3, H, W]


def run_onnx(path: Path) -> tuple[str, ModelConfig, str, np.ndarray]:
    """An ONNX head's model fingerprint and config, its runtime, and its spikes on the check images."""
    import onnxruntime

    from spikebottlenet.shared.onnx_head import INPUT, read_exported_head

    exported = read_exported_head(path)
    config = exported.checkpoint.config
    print(
        f"{path}: the head of {config.backbone.arch} {config.split_point.name}, model "
        f"{exported.checkpoint.fingerprint[:12]}, spikes {list(config.spike_shape)} per image, "
        f"{len(exported.layers)} convs in its energy table"
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spikes = session.run(None, {INPUT: check_images(config).numpy()})[0]
    return exported.checkpoint.fingerprint, config, "onnxruntime", spikes


def run_nir(path: Path) -> tuple[str, ModelConfig, str, np.ndarray]:
    """A NIR head's model fingerprint and config, its runtime, and snnTorch's spikes on the check images, run step
    by step from rest."""
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    from spikebottlenet.shared.nir_head import read_nir_head, without_groups

    exported = read_nir_head(path)
    config = exported.checkpoint.config
    lifs = sum(type(node).__name__ == "LIF" for node in exported.graph.nodes.values())
    print(
        f"{path}: the head of {config.backbone.arch} {config.split_point.name}, model "
        f"{exported.checkpoint.fingerprint[:12]}, spikes {list(config.spike_shape)} per image, "
        f"{len(exported.graph.nodes)} nodes ({lifs} LIF layers), T = {exported.time_steps} steps of "
        f"dt = {exported.dt:g} s"
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints as it goes
        net = import_from_nir(without_groups(exported.graph))
    images, state, steps = check_images(config), None, []
    snntorch.utils.reset(net)  # each LIF at rest: snnTorch keeps the membranes in its modules
    with torch.no_grad():
        for _ in range(exported.time_steps):
            spikes, state = net(images, state)  # [B, C', H', W'], and the graph's own state between steps
            steps.append(spikes)
    return exported.checkpoint.fingerprint, config, "snnTorch", torch.stack(steps).to(torch.uint8).numpy()
