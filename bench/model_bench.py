"""Monolithic forward time of each full-width backbone on CPU, and the share spent in LIF neurons.

    python bench/model_bench.py                      # every backbone, the paper's bottleneck at the last split point
    python bench/model_bench.py --arch mobilenetv2 --threads 1 --runs 5 --json

Each model is the paper's: full width, 100 classes, T=4, batch 1, the bottleneck at the backbone's
last split point (Spike ResNet50: RB16, C'=32, stride 2; MobileNetV2: IRB17), run in one process
(head then tail, no codec). All backbones are timed in the same run, interleaved forward by
forward, so the printed ratio compares them under the same machine load. Weights are at their
initialization: the convs are dense, so CPU time does not depend on how many neurons fire, and the
LIF updates are elementwise over every neuron whatever its value.

Each backbone runs both ways in the same run, interleaved too: ``fused``, the LIF's inference pass
(shared/lif_kernel.py: the T steps, the tdBN before the neuron and the residual add in one compiled
loop), and ``reference``, the same modules with every LIF switched to its step-by-step loop and the
tdBN and add as separate tensor operations (``use_fused_inference``), as the model ran before the
fused pass. Their outputs are checked to be bitwise equal before anything is timed.

How the LIF share is measured: a forward pre-hook and a forward hook on every LIF module read
time.perf_counter() before and after each call. CPU kernels run synchronously, so the time between
the two is the LIF's own work: its T-step charge / fire / reset, and the tdBN and residual add it
applies to its input (in both ways, so the two shares compare the same work). The hooked forwards
are timed separately from the plain ones, so the hooks' own cost shows as the difference of the two
totals.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from spikebottlenet.shared.backbones import ARCH_CHOICES, BACKBONES, backbone_config, resolve_arch
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.neuron import LIF, use_fused_inference
from spikebottlenet.shared.split_model import SpikeBottleNet

TIME_STEPS = 4
MODES = ("reference", "fused")  # the LIF path: use_fused_inference(model, mode == "fused")


class LIFTimer:
    """Accumulates wall time inside every LIF module of a model while attached."""

    def __init__(self, model: nn.Module) -> None:
        self.lifs = [m for m in model.modules() if isinstance(m, LIF)]
        self.seconds, self.calls = 0.0, 0
        self._started: dict[int, float] = {}
        self._handles = []

    def __enter__(self) -> LIFTimer:
        for lif in self.lifs:
            self._handles.append(lif.register_forward_pre_hook(self._start))
            self._handles.append(lif.register_forward_hook(self._stop))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start(self, module: nn.Module, inputs: tuple) -> None:
        self._started[id(module)] = time.perf_counter()

    def _stop(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.seconds += time.perf_counter() - self._started.pop(id(module))
        self.calls += 1


def timed_forward(model: nn.Module, images: torch.Tensor) -> float:
    start = time.perf_counter()
    model(images)
    return time.perf_counter() - start


def paper_model(arch: str) -> SpikeBottleNet:
    """Full width, 100 classes, the paper's bottleneck at the last split point, T=4."""
    backbone = backbone_config(arch)
    preset = backbone.bottleneck_preset(len(backbone.split_points()))
    return SpikeBottleNet(ModelConfig(backbone=backbone, time_steps=TIME_STEPS).with_split(preset)).eval()


def timings(plain: list[float], hooked: list[float], lif: LIFTimer) -> dict[str, float]:
    """One backbone in one mode: forward times (ms) and the LIF modules' share of the hooked ones."""
    return {
        "forward_ms": statistics.median(plain) * 1e3,
        "forward_ms_min": min(plain) * 1e3,
        "forward_ms_max": max(plain) * 1e3,
        "hooked_ms": statistics.median(hooked) * 1e3,
        "lif_ms": lif.seconds / len(hooked) * 1e3,
        "lif_share": lif.seconds / sum(hooked),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", choices=ARCH_CHOICES, action="append", help="backbone to time (repeatable; default: every backbone)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help=f"torch intra-op threads (default here: {torch.get_num_threads()})",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed forwards per backbone and mode, after one warm-up")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    archs = [resolve_arch(a) for a in args.arch] if args.arch else list(BACKBONES)
    models = {arch: paper_model(arch) for arch in archs}
    images = torch.randn(args.batch, 3, 32, 32)  # [B, 3, H, W]
    runs = [(arch, mode) for arch in archs for mode in MODES]
    plain: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    hooked: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    timers = {(arch, mode): LIFTimer(models[arch]) for arch, mode in runs}
    with torch.inference_mode():
        for arch, model in models.items():
            # warm-up (allocator, oneDNN primitive caches, the fused pass's compilation), and the check
            # that both ways compute the same logits
            logits = {}
            for mode in MODES:
                use_fused_inference(model, mode == "fused")
                logits[mode] = model(images)
            if not torch.equal(*logits.values()):
                raise AssertionError(f"{arch}: the fused LIF pass changed the logits")
        for _ in range(args.runs):  # interleaved, so a load change hits every backbone and mode alike
            for arch, mode in runs:
                use_fused_inference(models[arch], mode == "fused")
                plain[arch, mode].append(timed_forward(models[arch], images))
            for arch, mode in runs:
                use_fused_inference(models[arch], mode == "fused")
                with timers[arch, mode]:
                    hooked[arch, mode].append(timed_forward(models[arch], images))

    results = {}
    for arch, model in models.items():
        config = model.config
        fused, reference = (
            timings(plain[arch, mode], hooked[arch, mode], timers[arch, mode]) for mode in ("fused", "reference")
        )
        results[arch] = {
            "split_point": config.split_point.name,
            "time_steps": config.time_steps,
            "spike_shape": list(config.spike_shape),
            "parameters": sum(p.numel() for p in model.parameters()),
            "lif_modules": len(timers[arch, "fused"].lifs),
            **fused,
            "reference": reference,
            "speedup": reference["forward_ms"] / fused["forward_ms"],  # of the whole forward
            "lif_speedup": reference["lif_ms"] / fused["lif_ms"],
        }
    first = archs[0]
    ratios = {f"{arch}/{first}": results[arch]["forward_ms"] / results[first]["forward_ms"] for arch in archs[1:]}
    if args.json:
        print(
            json.dumps(
                {
                    "batch": args.batch,
                    "threads": args.threads,
                    "runs": args.runs,
                    "torch": torch.__version__,
                    "backbones": results,
                    "forward_ratio": ratios,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"full width, 100 classes, T={TIME_STEPS}, batch {args.batch}, {args.threads} thread(s), {args.runs} "
        f"interleaved runs after 1 warm-up, torch {torch.__version__}"
    )
    for arch, r in results.items():
        print(
            f"{arch:<20} {r['split_point']:>5} preset, spikes {tuple(r['spike_shape'])}, "
            f"{r['parameters'] / 1e6:.1f} M parameters, {r['lif_modules']} LIF modules, T={TIME_STEPS} steps each"
        )
        for mode, m in (("reference", r["reference"]), ("fused", r)):
            print(
                f"  {mode:<9} forward median {m['forward_ms']:8.1f} ms   (min {m['forward_ms_min']:.1f}, "
                f"max {m['forward_ms_max']:.1f}); with hooks {m['hooked_ms']:.1f} ms, of which LIF "
                f"{m['lif_ms']:.1f} ms = {m['lif_share']:.1%}"
            )
        print(
            f"  fused vs reference (same run, same outputs): forward x{r['speedup']:.2f} faster, "
            f"LIF modules x{r['lif_speedup']:.2f} faster"
        )
    for name, ratio in ratios.items():
        print(f"forward time {name}: x{ratio:.2f} (same run, fused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
