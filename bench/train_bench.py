"""Time one CIFAR-100-sized training epoch of each full-width backbone, the way ``sbn train pretrain`` runs it.

    python bench/train_bench.py                       # every backbone, 50,000 images, T=4, batch 128, bf16 on a GPU
    python bench/train_bench.py --arch resnet50 --images 5000 --json

The data are random uint8 images of CIFAR-100's shape (3x32x32, 100 classes): the epoch time of a
spiking network does not depend on the pixels (the convs are dense and every LIF updates every
neuron), so no dataset download is needed to plan a real run. Each epoch is the trainer's own
(``spikebottlenet.training.trainer.fit``: augmentation, autocast, optimizer step, the per-epoch test pass over
1,000 images) and the time is the one it records. Before timing, the script checks where the
weights and activations really live and which dtype autocast computes in, and prints both.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from spikebottlenet.shared.backbones import ARCH_CHOICES, BACKBONES, backbone_config, resolve_arch
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.training.datasets import Augmentation, Dataset, ImageSet
from spikebottlenet.training.runtime import PRECISIONS, Runtime, start
from spikebottlenet.training.trainer import TrainConfig, fit

CIFAR100_TRAIN_IMAGES = 50_000
TEST_IMAGES = 1_000
CLASSES = 100


def random_cifar_shaped(train_images: int, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)

    def images(n: int) -> ImageSet:
        return ImageSet(
            torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
            torch.randint(0, CLASSES, (n,), generator=generator),
        )

    return Dataset(
        "random-cifar100-shaped",
        images(train_images),
        images(TEST_IMAGES),
        tuple(str(i) for i in range(CLASSES)),
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
        Augmentation(),
    )


def placement(model: SpikingBackbone, runtime: Runtime, data: Dataset) -> dict[str, str]:
    """Where the parameters are and what dtype a conv computes in under the runtime's autocast."""
    model.to(runtime.device).eval()
    images = data.normalize(data.train.images[:2].to(runtime.device))
    with torch.no_grad(), runtime.autocast():
        spikes = model.forward_features(images)  # [T, B, C, H, W] after the last block
        conv_out = model.stem.conv(images)
    return {
        "parameters": str(next(model.parameters()).device),
        "activations": str(spikes.device),
        "conv_dtype": str(conv_out.dtype).removeprefix("torch."),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", choices=ARCH_CHOICES, action="append", help="backbone to time (repeatable; default: every backbone)"
    )
    parser.add_argument("--images", type=int, default=CIFAR100_TRAIN_IMAGES, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--time-steps", "-T", type=int, default=4)
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="timed epochs per backbone (after a warm-up epoch on a tenth of the images)",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--device", help="torch device (default: the GPU if any)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    runtime = start(args.precision, args.device)
    data = random_cifar_shaped(args.images)
    warmup = data.take(max(args.batch_size, args.images // 10), TEST_IMAGES)
    archs = [resolve_arch(a) for a in args.arch] if args.arch else list(BACKBONES)
    results = {}
    for arch in archs:
        torch.manual_seed(0)
        model = SpikingBackbone(backbone_config(arch, num_classes=CLASSES), args.time_steps)
        where = placement(model, runtime, data)
        train = TrainConfig(epochs=1, batch_size=args.batch_size, lr=2e-3, warmup_epochs=0.0)
        fit(model, warmup, train, runtime, description=f"{arch} warm-up")  # cuDNN autotuning, allocator
        history = fit(
            model, data, TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=2e-3), runtime, description=arch
        )
        seconds = [h["seconds"] for h in history]
        results[arch] = {
            **where,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "epoch_seconds": seconds,
            "epoch_seconds_min": min(seconds),
            "hours_for_200_epochs": min(seconds) * 200 / 3600,
        }
        if runtime.device.type == "cuda":
            results[arch]["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
    device = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else str(runtime.device)
    summary = {
        "device": device,
        "torch": torch.__version__,
        "images": args.images,
        "batch_size": args.batch_size,
        "time_steps": args.time_steps,
        "autocast": str(runtime.amp_dtype).removeprefix("torch."),
        "backbones": results,
    }
    first = archs[0]
    summary["epoch_ratio"] = {
        f"{a}/{first}": results[a]["epoch_seconds_min"] / results[first]["epoch_seconds_min"] for a in archs[1:]
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{device}, torch {torch.__version__}, autocast {summary['autocast']}, {args.images:,} random "
        f"CIFAR-100-shaped images per epoch, batch {args.batch_size}, T={args.time_steps}"
    )
    for arch, r in results.items():
        print(
            f"{arch:<20} parameters on {r['parameters']}, activations on {r['activations']}, convs in "
            f"{r['conv_dtype']}; {r['parameters_m']:.1f} M parameters"
        )
        print(
            f"  epoch {r['epoch_seconds_min']:.1f} s  -> 200 epochs {r['hours_for_200_epochs']:.1f} h"
            + (f"; peak memory {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else "")
        )
    for name, ratio in summary["epoch_ratio"].items():
        print(f"epoch time {name}: x{ratio:.2f} (same run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
