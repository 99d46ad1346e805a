"""``sbn export onnx``: a split checkpoint's head as an ONNX graph (shared/onnx_head.py), checked after writing.

The check runs the written file with onnxruntime and the checkpoint's head with torch, as the device runs it,
on random images, and counts the spikes that differ. A few may: onnxruntime's convs add their float32 terms in
another order than torch's, so a membrane potential within a rounding error of the threshold can fire in one
and not in the other (measured on MNIST's test split: docs/benchmarks.md). A graph that computes something
else differs in a large share of its bits; more than ``MAX_DIFFERING`` fails the export.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.model_arguments import add_model_arguments, chosen_checkpoint
from spikebottlenet.shared.onnx_head import INPUT, export_head

CHECK_IMAGES = 32
MAX_DIFFERING = 1e-3  # of the bits: rounding flips measured at about 1e-5, a wrong graph at tens of percent


class ExportMismatch(SpikeBottleNetError):
    """The exported graph's spikes differ from the torch head's."""


class MissingExporter(SpikeBottleNetError):
    """The onnx extra is not installed."""


def require_onnx_extra() -> None:
    """MissingExporter naming the install command if torch's exporter or onnxruntime cannot be imported."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExporter(
                f"exporting to ONNX needs the {module} package: pip install 'spikebottlenet[onnx]' "
                "(from a checkout: pip install '.[onnx]')"
            ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    onnx = formats.add_parser("onnx", help="the head and encoder as ONNX, for `onnxruntime` on a torch-free device")
    add_model_arguments(onnx, "export the head of")
    onnx.add_argument("--out", type=Path, help="the .onnx file to write (default: the checkpoint's name, .onnx)")


def run(args: argparse.Namespace) -> int:
    require_onnx_extra()
    import onnxruntime

    checkpoint = chosen_checkpoint(args)
    out = args.out or Path(checkpoint.with_suffix(".onnx").name)
    exported = export_head(checkpoint, out)
    config = exported.checkpoint.config
    head = load_checkpoint(checkpoint, "head").model.eval()
    size = config.backbone.image_size
    images = torch.randn(CHECK_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = head(images).to(torch.uint8).numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    spikes = session.run(None, {INPUT: images.numpy()})[0]
    differ = int(np.count_nonzero(spikes != expected))
    print(
        f"wrote {out} ({out.stat().st_size:,} bytes): the head of {config.backbone.arch} "
        f"{config.split_point.name}, model {exported.checkpoint.fingerprint[:12]}, spikes {list(config.spike_shape)} "
        f"per image, {len(exported.layers)} convs in its energy table"
    )
    print(
        f"check: onnxruntime against the torch head on {CHECK_IMAGES} random images: "
        f"{differ} of {spikes.size:,} bits differ"
    )
    if differ > MAX_DIFFERING * spikes.size:
        raise ExportMismatch(
            f"the exported head's spikes differ from the torch head's in {differ} of {spikes.size} bits, more than "
            "rounding explains"
        )
    return 0
