"""The exported ONNX head (``sbn export onnx``) against the torch head it came from, on MNIST's test split.

    python bench/onnx_head_bench.py                           # the embedded MNIST models, all 10,000 test images
    python bench/onnx_head_bench.py --images 1000 --json

For each model: its head exported to a temporary file, then every test image (framed as uploads are, normalized
by the model's own mean and std) through the torch head as the device runs it (the fused inference pass) and
through onnxruntime (CPU execution provider), in batches of 100:

- spikes: how many of all transmitted bits differ;
- labels: the model's tail on each head's spikes (torch), how many test images get another label;
- energy: the largest relative difference between the two heads' per-image device energy at 45 nm (torch:
  ActivityMonitor's hooks; onnxruntime: the graph's own per-conv spike counts);
- latency: one image's head, median of ``--runs`` calls of each, interleaved, one thread each: the
  ratio onnxruntime / torch is the figure to compare (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spikebottlenet.shared.activity_monitor import ActivityMonitor
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import embedded_models
from spikebottlenet.shared.onnx_export import export_head
from spikebottlenet.shared.onnx_head import INPUT
from spikebottlenet.training.datasets import load_dataset

BATCH = 100


def normalized(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> the model's input, as shared/preprocess.py's load_image makes it."""
    return (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def measure(path: Path, images: torch.Tensor, labels: torch.Tensor, runs: int) -> dict[str, object]:
    import onnxruntime

    loaded = load_checkpoint(path, "full")
    model, config = loaded.model.eval(), loaded.config
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "head.onnx"
        exported = export_head(path, onnx_path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        size = onnx_path.stat().st_size
    bits = differing_bits = differing_labels = correct = 0
    worst_energy = 0.0
    for start in range(0, len(images), BATCH):
        x = normalized(images[start : start + BATCH], config.mean, config.std)
        with torch.inference_mode(), ActivityMonitor(model.head, config.time_steps) as monitor:
            spikes = model.head(x)
        torch_energy = [e.device_45nm_mj for e in monitor.estimates()]
        onnx_spikes, layer_spikes = session.run(None, {INPUT: x.numpy()})
        onnx_energy = [e.device_45nm_mj for e in exported.energy(layer_spikes)]
        bits += spikes.numel()
        differing_bits += int(np.count_nonzero(onnx_spikes != spikes.to(torch.uint8).numpy()))
        with torch.inference_mode():
            by_torch = model.tail(spikes).argmax(1)
            by_onnx = model.tail(torch.from_numpy(onnx_spikes).float()).argmax(1)
        differing_labels += int((by_torch != by_onnx).sum())
        correct += int((by_onnx == labels[start : start + BATCH]).sum())
        worst_energy = max(worst_energy, max(abs(o - t) / t for o, t in zip(onnx_energy, torch_energy, strict=True)))
    one = normalized(images[:1], config.mean, config.std)
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    for _ in range(runs):
        start = time.perf_counter()
        with torch.inference_mode():
            model.head(one)
        times["torch"].append(time.perf_counter() - start)
        start = time.perf_counter()
        session.run(None, {INPUT: one.numpy()})
        times["onnxruntime"].append(time.perf_counter() - start)
    torch_ms, onnx_ms = (statistics.median(times[k]) * 1e3 for k in ("torch", "onnxruntime"))
    return {
        "model": f"{config.backbone.arch} {config.split_point.name}",
        "fingerprint": loaded.fingerprint[:12],
        "onnx_bytes": size,
        "images": len(images),
        "bits": bits,
        "differing_bits": differing_bits,
        "differing_labels": differing_labels,
        "onnx_accuracy": 100 * correct / len(images),
        "worst_energy_relative_difference": worst_energy,
        "torch_head_ms": torch_ms,
        "onnx_head_ms": onnx_ms,
        "onnx_over_torch": onnx_ms / torch_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="the first N test images (default: all 10,000)")
    parser.add_argument("--runs", type=int, default=200, help="timed single-image calls of each head")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    test = load_dataset("mnist", subset=(1, args.images)).test  # one training image: only the test split is used
    results = [
        measure(m.path, test.images, test.labels, args.runs) for m in embedded_models() if m.info.dataset == "mnist"
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(
            f"{r['model']:<26} {r['differing_bits']:,} of {r['bits']:,} bits differ, "
            f"{r['differing_labels']} of {r['images']:,} labels; accuracy {r['onnx_accuracy']:.2f} %; "
            f"energy within {r['worst_energy_relative_difference']:.1e}; head {r['torch_head_ms']:.2f} ms torch, "
            f"{r['onnx_head_ms']:.2f} ms onnxruntime ({r['onnx_over_torch']:.2f}x); {r['onnx_bytes']:,} B"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
