"""Monolithic forward time of the full-width Spike ResNet50 on CPU, and the share spent in LIF neurons.

    python bench/model_bench.py                      # SpikeBottleNet, paper preset at RB16 (T=4), batch 1
    python bench/model_bench.py --threads 1 --runs 5

The model is the paper's: full width, 100 classes, the bottleneck at RB16 (T=4, C'=32, stride 2),
run in one process (head then tail, no codec). Weights are at their initialization: the convs are
dense, so CPU time does not depend on how many neurons fire, and the LIF updates are elementwise
over every neuron whatever its value.

How the LIF share is measured: a forward pre-hook and a forward hook on every LIF module read
time.perf_counter() before and after each call. CPU kernels run synchronously, so the time between
the two is the LIF's own work (its T-step charge / fire / reset loop). The hooked forwards are timed
separately from the plain ones, so the hooks' own cost shows as the difference of the two totals.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from shared.bottleneck import paper_preset
from shared.neuron import LIF
from shared.split_model import ModelConfig, SpikeBottleNet


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

    def _start(self, module: nn.Module, inputs: tuple) -> None:
        self._started[id(module)] = time.perf_counter()

    def _stop(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.seconds += time.perf_counter() - self._started.pop(id(module))
        self.calls += 1


def timed_forwards(model: nn.Module, images: torch.Tensor, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(images)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"torch intra-op threads (default here: {torch.get_num_threads()})")
    parser.add_argument("--split-point", type=int, default=16, help="RBk of the paper preset (default 16: T=4)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed forwards, after one warm-up")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = ModelConfig().with_split(paper_preset(args.split_point))
    model = SpikeBottleNet(config).eval()
    images = torch.randn(args.batch, 3, 32, 32)  # [B, 3, H, W]
    params = sum(p.numel() for p in model.parameters())
    print(f"SpikeBottleNet, full-width Spike ResNet50, RB{args.split_point} preset: T={config.time_steps}, "
          f"spikes {config.spike_shape}; {params / 1e6:.1f} M parameters")
    print(f"batch {args.batch}, {args.threads} thread(s), {args.runs} runs after 1 warm-up, torch {torch.__version__}")

    with torch.inference_mode():
        model(images)  # warm-up: allocator, oneDNN primitive caches
        plain = timed_forwards(model, images, args.runs)
        with LIFTimer(model) as lif:
            hooked = timed_forwards(model, images, args.runs)

    forward, with_hooks = statistics.median(plain), statistics.median(hooked)
    print(f"forward       median {forward * 1e3:8.1f} ms   (min {min(plain) * 1e3:.1f}, max {max(plain) * 1e3:.1f})")
    print(f"with hooks    median {with_hooks * 1e3:8.1f} ms")
    print(f"LIF updates   mean   {lif.seconds / args.runs * 1e3:8.1f} ms per forward = {lif.seconds / sum(hooked):.1%} "
          f"of the hooked forwards' time ({len(lif.lifs)} LIF modules, {lif.calls // args.runs} calls per forward, "
          f"T={config.time_steps} steps each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
