"""The exported NIR head (``sbn export nir``), run by snnTorch's NIR import, against the torch head it came from,
on MNIST's test split.

    python bench/nir_head_bench.py                            # the embedded MNIST models, all 10,000 test images
    python bench/nir_head_bench.py --images 1000 --json

For each model: its head exported to a temporary file, read back and imported by snnTorch (grouped convs written
dense, which its importer needs), then every test image (framed as uploads are, normalized by the model's own
mean and std) through the torch head as the device runs it (the fused inference pass, multi-step) and through
snnTorch (one time step per call, its own convs and Leaky neurons), in batches of 100:

- spikes: how many of all transmitted bits differ (tests/shared/test_nir_head.py explains each such bit as a
  membrane potential within float32 rounding of the threshold);
- labels: the model's tail on each head's spikes (torch), how many test images get another label;
- time: the whole split through each head, one thread (snnTorch's per-step Python is not what a chip runs).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import snntorch.utils
import torch
from snntorch.import_nir import import_from_nir

from bench.onnx_head_bench import normalized
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import embedded_models
from spikebottlenet.shared.nir_head import export_nir_head, read_nir_head, without_groups
from spikebottlenet.training.datasets import load_dataset

BATCH = 100


def measure(path: Path, images: torch.Tensor, labels: torch.Tensor) -> dict[str, object]:
    loaded = load_checkpoint(path, "full")
    model, config = loaded.model.eval(), loaded.config
    with tempfile.TemporaryDirectory() as tmp:
        nir_path = Path(tmp) / "head.nir"
        export_nir_head(path, nir_path)
        exported = read_nir_head(nir_path)
        size = nir_path.stat().st_size
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints as it goes
        net = import_from_nir(without_groups(exported.graph))
    bits = differing_bits = differing_labels = correct = 0
    seconds = {"torch": 0.0, "snntorch": 0.0}
    for start in range(0, len(images), BATCH):
        x = normalized(images[start : start + BATCH], config.mean, config.std)
        began = time.perf_counter()
        with torch.inference_mode():
            spikes = model.head(x).float()  # [T, B, C', H', W']
        seconds["torch"] += time.perf_counter() - began
        began = time.perf_counter()
        snntorch.utils.reset(net)
        state, steps = None, []
        with torch.no_grad():
            for _ in range(exported.time_steps):
                step, state = net(x, state)
                steps.append(step)
        nir_spikes = torch.stack(steps)
        seconds["snntorch"] += time.perf_counter() - began
        bits += spikes.numel()
        differing_bits += int((nir_spikes != spikes).sum())
        with torch.inference_mode():
            by_torch = model.tail(spikes).argmax(1)
            by_nir = model.tail(nir_spikes).argmax(1)
        differing_labels += int((by_torch != by_nir).sum())
        correct += int((by_nir == labels[start : start + BATCH]).sum())
    return {
        "model": f"{config.backbone.arch} {config.split_point.name}",
        "fingerprint": loaded.fingerprint[:12],
        "nir_bytes": size,
        "nodes": len(exported.graph.nodes),
        "images": len(images),
        "bits": bits,
        "differing_bits": differing_bits,
        "differing_labels": differing_labels,
        "nir_accuracy": 100 * correct / len(images),
        "torch_head_ms_per_image": 1e3 * seconds["torch"] / len(images),
        "snntorch_ms_per_image": 1e3 * seconds["snntorch"] / len(images),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="the first N test images (default: all 10,000)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    test = load_dataset("mnist", subset=(1, args.images)).test  # one training image: only the test split is used
    results = [measure(m.path, test.images, test.labels) for m in embedded_models() if m.info.dataset == "mnist"]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(
            f"{r['model']:<26} {r['differing_bits']:,} of {r['bits']:,} bits differ, "
            f"{r['differing_labels']} of {r['images']:,} labels; accuracy {r['nir_accuracy']:.2f} %; "
            f"{r['nodes']} nodes, {r['nir_bytes']:,} B; per image {r['torch_head_ms_per_image']:.2f} ms torch, "
            f"{r['snntorch_ms_per_image']:.2f} ms snnTorch"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
