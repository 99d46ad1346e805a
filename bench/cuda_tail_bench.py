"""The edge's tail on a GPU (``sbn edge --device cuda``): equal to the CPU tail, frames per second, peak memory.

    python bench/cuda_tail_bench.py --json                    # on a machine with a CUDA GPU
    python bench/cuda_tail_bench.py --device cpu --json       # the same measurements on the CPU, for comparison

1. Equality: each embedded MNIST model's tail through ``TailRunner`` on ``--device`` (fp32, and bf16 autocast)
   against the same tail on the CPU in fp32, on the torch head's spikes for the first ``--images`` MNIST test
   images: the largest logit difference and how many labels differ.
2. Throughput: the full-width (paper-size, 100 classes) Spike ResNet50 RB8 and spiking MobileNetV2 IRB8 tails,
   untrained (time depends on shapes, not on weights), on random spikes firing at 15 %, at each batch size:
   frames per second (median of ``--runs`` timed calls after warm-up, the GPU synchronized) and the peak memory
   the device allocated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.shared.backbones import backbone_config
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import embedded_models
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.split_model import SplitTail
from spikebottlenet.shared.torch_runtime import inference_device
from spikebottlenet.training.datasets import load_dataset

from .onnx_head_bench import normalized

BATCH_SIZES = (1, 8, 32, 128)
FULL_WIDTH = (("spiking_resnet50", 8), ("spiking_mobilenetv2", 8))
FIRING_RATE = 0.15


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def equality(device: torch.device, images: int) -> list[dict[str, object]]:
    test = load_dataset("mnist", subset=(1, images)).test
    results = []
    for model in (m for m in embedded_models() if m.info.dataset == "mnist"):
        loaded = load_checkpoint(model.path, "full")
        config = loaded.config
        with torch.inference_mode():
            spikes = loaded.model.head(normalized(test.images, config.mean, config.std))  # [T, B, C', H', W']
        cpu = TailRunner(loaded.model.tail, loaded.checkpoint, images).infer(spikes)
        for precision in ("fp32", "bf16"):
            tail = load_checkpoint(model.path, "tail")
            logits = TailRunner(tail.model, tail.checkpoint, images, device, precision).infer(spikes)
            results.append(
                {
                    "model": f"{config.backbone.arch} {config.split_point.name}",
                    "precision": precision,
                    "images": images,
                    "max_logit_difference": float((logits - cpu).abs().max()),
                    "largest_logit": float(cpu.abs().max()),
                    "differing_labels": int((logits.argmax(1) != cpu.argmax(1)).sum()),
                }
            )
    return results


def throughput(device: torch.device, runs: int) -> list[dict[str, object]]:
    results = []
    for arch, k in FULL_WIDTH:
        backbone = backbone_config(arch)
        config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(k))
        tail = SplitTail(config).eval().to(device)
        generator = torch.Generator().manual_seed(0)
        for batch in BATCH_SIZES:
            spikes = torch.rand(config.spike_shape[0], batch, *config.spike_shape[1:], generator=generator)
            spikes = (spikes < FIRING_RATE).to(device)  # [T, B, C', H', W'] bool, as the edge decodes them
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            with torch.inference_mode():
                for run in range(runs + 3):  # 3 warm-up calls
                    synchronize(device)
                    start = time.perf_counter()
                    tail(spikes)
                    synchronize(device)
                    if run >= 3:
                        times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            results.append(
                {
                    "model": f"{arch} {config.split_point.name} (width 1, 100 classes)",
                    "batch": batch,
                    "ms_per_call": 1e3 * seconds,
                    "frames_per_s": batch / seconds,
                    "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20
                    if device.type == "cuda"
                    else None,
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda[:N] (default), or cpu")
    parser.add_argument("--images", type=int, default=1000, help="MNIST test images for the equality check")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = inference_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results = {"device": name, "equality": equality(device, args.images), "throughput": throughput(device, args.runs)}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"device: {name}")
    for r in results["equality"]:
        print(
            f"{r['model']:<24} {r['precision']}: logits within {r['max_logit_difference']:.2e} of the CPU's "
            f"(largest {r['largest_logit']:.1f}), {r['differing_labels']} of {r['images']} labels differ"
        )
    for r in results["throughput"]:
        memory = "" if r["peak_memory_mib"] is None else f", peak {r['peak_memory_mib']:.0f} MiB"
        print(f"{r['model']:<48} batch {r['batch']:>3}: {r['frames_per_s']:8.1f} frames/s{memory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
