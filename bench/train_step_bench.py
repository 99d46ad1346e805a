"""CPU time of one training step of each narrow backbone, with the LIF's fused training Functions and without.

    python bench/train_step_bench.py                     # both backbones, T=4, batch 128, 1 thread
    python bench/train_step_bench.py --arch mobilenetv2 --runs 3 --json

One step is what the trainer does per batch on a CPU: forward, cross-entropy, backward, AdamW step, on
32x32 images, 10 classes, T=4, with the narrow backbones the tests and demos train: Spike ResNet50 at
width 1/16 and MobileNetV2 at width 1/4. Each backbone runs three ways, each on its own copy of the same
initial weights, with its own optimizer:

    reference    autograd through the step-by-step LIF, the tdBN before it as a module (``use_fused_training``
                 off): the training path as it was
    fused-lif    the LIF's T steps as one autograd Function (shared/lif_autograd.py's ``LIFFunction``), the
                 tdBN still a module
    fused        the train-mode tdBN, the residual add and the T steps in one Function (``LIFNormFunction``):
                 the default

Before anything is timed, one step of each checks that the fused ways compute the reference's logits bit
for bit. The timed steps are interleaved, way by way and backbone by backbone, so a change of machine load
hits all of them alike, and the speedups compare medians of the same run. The images and labels are random:
a step's time does not depend on them (the convs are dense, every LIF updates every neuron).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from spikebottlenet.shared.backbones import ARCH_CHOICES, backbone_config, resolve_arch
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.shared.neuron import use_fused_training

TIME_STEPS = 4
CLASSES = 10
NARROW_WIDTH = {"spiking_resnet50": 0.0625, "spiking_mobilenetv2": 0.25}
MODES = ("reference", "fused-lif", "fused")


class Trainee:
    """One backbone trained one way: its own model and AdamW."""

    def __init__(self, model: SpikingBackbone, mode: str) -> None:
        self.model = model.train()
        use_fused_training(model, mode != "reference", norm=mode == "fused")
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
        """One training step: its wall time in seconds, and the logits."""
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(images)
        F.cross_entropy(logits, labels).backward()
        self.optimizer.step()
        return time.perf_counter() - start, logits.detach()


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "step_ms": statistics.median(seconds) * 1e3,
        "step_ms_min": min(seconds) * 1e3,
        "step_ms_max": max(seconds) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", choices=ARCH_CHOICES, action="append", help="backbone to time (repeatable; default: both)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5, help="timed steps per backbone and way, after one warm-up")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    archs = [resolve_arch(a) for a in args.arch] if args.arch else list(NARROW_WIDTH)
    images = torch.randn(args.batch, 3, 32, 32)
    labels = torch.randint(0, CLASSES, (args.batch,))
    trainees: dict[tuple[str, str], Trainee] = {}
    for arch in archs:
        config = backbone_config(arch, width_multiplier=NARROW_WIDTH[arch], num_classes=CLASSES)
        initial = SpikingBackbone(config, TIME_STEPS)
        trainees.update({(arch, mode): Trainee(copy.deepcopy(initial), mode) for mode in MODES})
    # warm-up (allocator, oneDNN primitives, numba's compilation or its cache), and the check that every way
    # computes the reference's logits from the same weights
    for arch in archs:
        logits = {mode: trainees[arch, mode].step(images, labels)[1] for mode in MODES}
        for mode in MODES[1:]:
            if not torch.equal(logits[mode], logits["reference"]):
                raise AssertionError(f"{arch}: the {mode} training step changed the logits")
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in trainees}
    for _ in range(args.runs):
        for key, trainee in trainees.items():
            seconds[key].append(trainee.step(images, labels)[0])

    results = {}
    for arch in archs:
        ways = {mode: summary(seconds[arch, mode]) for mode in MODES}
        reference = ways["reference"]["step_ms"]
        for mode in MODES[1:]:
            ways[mode]["speedup"] = reference / ways[mode]["step_ms"]
        results[arch] = {
            "width_multiplier": NARROW_WIDTH[arch],
            "parameters": sum(p.numel() for p in trainees[arch, "reference"].model.parameters()),
            **ways,
        }
    if args.json:
        print(
            json.dumps(
                {
                    "batch": args.batch,
                    "time_steps": TIME_STEPS,
                    "threads": args.threads,
                    "runs": args.runs,
                    "torch": torch.__version__,
                    "backbones": results,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"one training step (forward, cross-entropy, backward, AdamW), 32x32, {CLASSES} classes, T={TIME_STEPS}, "
        f"batch {args.batch}, {args.threads} thread(s), median of {args.runs} interleaved runs after 1 warm-up, "
        f"torch {torch.__version__}"
    )
    print(f"{'backbone':<26}{'way':<11}{'median ms':>11}{'min':>9}{'max':>9}{'speedup':>9}")
    for arch, r in results.items():
        name = f"{arch} x{r['width_multiplier']:g}"
        for mode in MODES:
            m = r[mode]
            speedup = f"x{m['speedup']:.2f}" if "speedup" in m else ""
            print(
                f"{name:<26}{mode:<11}{m['step_ms']:>11.0f}{m['step_ms_min']:>9.0f}{m['step_ms_max']:>9.0f}{speedup:>9}"
            )
            name = ""
    return 0


if __name__ == "__main__":
    sys.exit(main())
