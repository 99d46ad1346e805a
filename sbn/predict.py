"""``sbn predict IMAGE``: classify one image with the whole model in one process (the reference path).

The full checkpoint is loaded (``load_checkpoint(path, "full")``) and run as the split path runs
it, minus the network: the model's head goes through the device's HeadRunner (same preprocessing,
energy accounting and spike packing, so the byte counts are what a device would send) and its tail
runs on those spikes in this process. The output has the fields of ``POST /classify`` plus the
logits; latency has only ``device`` (image to packed spikes) and ``total``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from time import perf_counter
from typing import Any

import torch

from spikebottlenet.device.classification import Classification, ImageResult, Latency, WireShare
from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.device.torch_head import TorchHead
from spikebottlenet.shared.checkpoint import LoadedModel, load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import CheckpointError
from spikebottlenet.shared.codec import CODEC_CHOICES
from spikebottlenet.shared.energy import CountMode
from spikebottlenet.shared.model_arguments import add_model_arguments, chosen_checkpoint
from spikebottlenet.shared.split_model import SpikeBottleNet


class MonolithicClassifier:
    """A full checkpoint that classifies image bytes in-process, as the device + edge pair would."""

    def __init__(self, loaded: LoadedModel, codec: str = "raw", energy_mode: CountMode | str = CountMode.PAPER) -> None:
        if not isinstance(loaded.model, SpikeBottleNet):
            raise CheckpointError(f"{loaded.checkpoint.path} is a backbone checkpoint, with no bottleneck to split at")
        self.checkpoint = loaded.checkpoint
        self.head = HeadRunner(TorchHead(loaded.model.head, loaded.checkpoint, energy_mode), codec)
        self.tail = loaded.model.tail

    def classify(self, image: bytes) -> Classification:
        """Raises shared.preprocess.ImageError if ``image`` is not a readable image."""
        start = perf_counter()
        spikes = self.head.run(image)
        headed = perf_counter()
        with torch.inference_mode():
            logits = self.tail(torch.from_numpy(spikes.spikes))  # [1, num_classes]
        latency = Latency(device=(headed - start) * 1e3, total=(perf_counter() - start) * 1e3)
        (wire,) = WireShare.of_frame(spikes.frame, self.checkpoint.config.geometry().uncompressed_bytes)
        return Classification.build(
            ImageResult(self.checkpoint, spikes, logits[0].numpy(), latency, wire), include_logits=True
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM)")
    add_model_arguments(parser, "run whole")
    parser.add_argument(
        "--codec", choices=CODEC_CHOICES, default="raw", help="spike codec the byte counts are for (default: raw)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    loaded = load_checkpoint(chosen_checkpoint(args), "full")
    result = MonolithicClassifier(loaded, args.codec).classify(args.image.read_bytes())
    fields = result.model_dump(exclude_none=True)
    print(json.dumps(fields, indent=2) if args.json else "\n".join(_text_lines(fields)))
    return 0


def _text_lines(fields: dict[str, Any], prefix: str = "") -> list[str]:
    """One aligned ``name  value`` line per field; nested objects become dotted names."""
    lines = []
    for name, value in fields.items():
        if isinstance(value, dict):
            lines += _text_lines(value, f"{prefix}{name}.")
            continue
        if name == "top5":
            value = ", ".join(f"{c['label']} {c['probability']:.4f}" for c in value)
        elif name == "logits":
            value = " ".join(f"{v:.5g}" for v in value)
        elif isinstance(value, float):
            value = f"{value:.6g}"
        lines.append(f"{prefix + name:<34} {value}")
    return lines
