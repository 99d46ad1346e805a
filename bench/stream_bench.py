"""Streaming over time steps with early exit, through the real services.

    python -m bench.stream_bench [--split-point 3 8] [--thresholds 0.5 0.7 0.9 0.99] [--images N]
                                 [--full-width-requests 20] [--plot bench/results/stream_early_exit.png] [--json]

For each demo model an ``sbn edge`` and an ``sbn device`` start on 127.0.0.1 (one torch thread each),
and every digit of the test split (never trained on) is POSTed to /classify, one request at a time:
unary, streamed (``?stream=true``), and streamed with each early-exit threshold (``?early_exit=p``).
Reported per model and threshold: accuracy, how often the answer is the full run's, mean time steps
sent and computed, mean bytes sent, mean device energy and p50 latency; and, for the demo model and a
full-width Spike ResNet50 split after RB8 (untrained: latency only), the p50 latency of unary against
streamed requests, measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx
import numpy as np
from PIL import Image

from spikebottlenet.sbn.up import local_stack
from spikebottlenet.shared.backbones import SpikingResNetConfig
from spikebottlenet.shared.checkpoint import save_checkpoint
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint, read_checkpoint_info
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.processes import free_port
from spikebottlenet.shared.split_model import SpikeBottleNet
from spikebottlenet.training.datasets import load_digits

ARCH = "spiking_resnet50"


def png(image: np.ndarray) -> bytes:
    """A uint8 [3, H, W] image as the PNG a user would upload."""
    buffer = io.BytesIO()
    Image.fromarray(image.transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def post(client: httpx.Client, image: bytes, **params: str) -> tuple[dict[str, Any], float]:
    start = perf_counter()
    response = client.post("/classify", params=params, files={"file": ("digit.png", image, "image/png")})
    elapsed = (perf_counter() - start) * 1e3
    response.raise_for_status()
    return response.json(), elapsed


def early_exit_rows(
    client: httpx.Client, images: list[bytes], labels: list[int], thresholds: list[float]
) -> list[dict[str, Any]]:
    """One row per way of sending (unary, streamed, each threshold) over ``images``."""
    ways: dict[str, dict[str, str]] = {"unary": {}, "streamed": {"stream": "true"}}
    ways.update({f"early exit {p:g}": {"early_exit": str(p)} for p in thresholds})
    answers: dict[str, list[tuple[dict[str, Any], float]]] = {way: [] for way in ways}
    for image in images:  # interleaved, so that every way sees the machine in the same state
        for way, params in ways.items():
            answers[way].append(post(client, image, **params))
    full = [a["class_index"] for a, _ in answers["unary"]]
    rows = []
    for way, replies in answers.items():
        bodies = [a for a, _ in replies]
        rows.append(
            {
                "way": way,
                "images": len(bodies),
                "accuracy": 100 * float(np.mean([a["class_index"] == y for a, y in zip(bodies, labels, strict=True)])),
                "same_as_full_run": 100
                * float(np.mean([a["class_index"] == f for a, f in zip(bodies, full, strict=True)])),
                "steps_sent": float(np.mean([a.get("time_steps_sent", a["time_steps"]) for a in bodies])),
                "steps_computed": float(np.mean([a.get("time_steps_computed", a["time_steps"]) for a in bodies])),
                "bytes": float(np.mean([a["transmitted_bytes"] for a in bodies])),
                "device_uj": 1e3 * float(np.mean([a["energy"]["device_45nm_mj"] for a in bodies])),
                "p50_ms": statistics.median(ms for _, ms in replies),
            }
        )
    return rows


def latency_pair(client: httpx.Client, images: list[bytes], requests: int) -> dict[str, float]:
    """p50 latency of unary and of streamed requests, interleaved, after a warm-up of each."""
    for params in ({}, {"stream": "true"}):
        post(client, images[0], **params)
    unary, streamed = [], []
    for i in range(requests):
        image = images[i % len(images)]
        unary.append(post(client, image)[1])
        streamed.append(post(client, image, stream="true")[1])
    p50 = statistics.median(unary), statistics.median(streamed)
    return {"unary_p50_ms": p50[0], "streamed_p50_ms": p50[1], "streamed_over_unary": p50[1] / p50[0]}


def full_width_checkpoint(folder: Path) -> Path:
    """A full-width Spike ResNet50 split after RB8 with the paper's bottleneck, untrained (for timing only)."""
    backbone = SpikingResNetConfig(num_classes=100)
    config = ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(8))
    path = folder / "full_width_rb8.safetensors"
    save_checkpoint(SpikeBottleNet(config).eval(), config, path)  # untrained
    return path


def measure(checkpoint: Path, run: Callable[[httpx.Client], Any]) -> Any:
    """``run(client)`` against an edge and a device serving ``checkpoint``, started for it and stopped after."""
    port = free_port()
    with local_stack(checkpoint, port=port, edge_port=free_port(), stdout=sys.stderr.fileno()):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            client.get("/readyz").raise_for_status()
            return run(client)


def draw(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    latency = right.twinx()
    for result, colour in zip(results, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False):
        rows = [r for r in result["rows"] if r["way"].startswith("early exit")]
        thresholds = [float(r["way"].split()[-1]) for r in rows]
        unary = next(r for r in result["rows"] if r["way"] == "unary")
        left.plot(thresholds, [r["accuracy"] for r in rows], "o-", color=colour, label=f"{result['model']} accuracy")
        left.plot(
            thresholds,
            [r["same_as_full_run"] for r in rows],
            "s--",
            color=colour,
            label=f"{result['model']} same answer as the full run",
        )
        right.plot(
            thresholds,
            [r["steps_sent"] for r in rows],
            "o-",
            color=colour,
            label=f"{result['model']} steps sent (of {unary['steps_sent']:g})",
        )
        latency.plot(
            thresholds,
            [r["p50_ms"] for r in rows],
            "^:",
            color=colour,
            label=f"{result['model']} p50 latency (unary {unary['p50_ms']:.0f} ms)",
        )
    left.set_xlabel("early-exit threshold (max softmax)")
    left.set_ylabel("% of the digits test split")
    right.set_xlabel("early-exit threshold (max softmax)")
    right.set_ylabel("mean time steps sent")
    latency.set_ylabel("p50 latency (ms)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7, loc="upper left")
    latency.legend(fontsize=7, loc="lower right")
    figure.suptitle("Early exit over streamed time steps (digits test split, real services, 2 cores)", fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split-point", type=int, nargs="+", default=[3, 8], help="demo ResNet models (default 3 8)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.99])
    parser.add_argument("--images", type=int, default=360, help="test digits per model (default: all 360)")
    parser.add_argument(
        "--full-width-requests",
        type=int,
        default=20,
        help="requests of each kind for the full-width latency pair (0: skip)",
    )
    parser.add_argument("--plot", type=Path, help="draw the early-exit trade-off here (.png)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = load_digits()
    images = [png(image.numpy()) for image in data.test.images[: args.images]]
    labels = data.test.labels[: args.images].tolist()
    results = []
    for k in args.split_point:
        checkpoint = default_checkpoint(ARCH, k)
        name = read_checkpoint_info(checkpoint).config.split_point.name
        rows, pair = measure(
            checkpoint,
            lambda client: (early_exit_rows(client, images, labels, args.thresholds), latency_pair(client, images, 50)),
        )
        results.append({"model": name, "rows": rows, "latency": pair})
    full_width = None
    if args.full_width_requests:
        with tempfile.TemporaryDirectory() as folder:
            full_width = measure(
                full_width_checkpoint(Path(folder)),
                lambda client: latency_pair(client, images, args.full_width_requests),
            )
    if args.plot:
        draw(results, args.plot)
    if args.json:
        print(json.dumps({"models": results, "full_width_rb8": full_width}, indent=2))
        return
    for result in results:
        print(f"\n{result['model']} (digits test split, {result['rows'][0]['images']} images, concurrency 1)")
        print(
            f"{'way':>16} {'acc %':>7} {'= full %':>8} {'sent':>5} {'computed':>8} {'bytes':>7} {'device uJ':>9} "
            f"{'p50 ms':>7}"
        )
        for r in result["rows"]:
            print(
                f"{r['way']:>16} {r['accuracy']:7.2f} {r['same_as_full_run']:8.2f} {r['steps_sent']:5.2f} "
                f"{r['steps_computed']:8.2f} {r['bytes']:7.1f} {r['device_uj']:9.3f} {r['p50_ms']:7.1f}"
            )
        pair = result["latency"]
        print(
            f"unary p50 {pair['unary_p50_ms']:.1f} ms, streamed p50 {pair['streamed_p50_ms']:.1f} ms "
            f"(x{pair['streamed_over_unary']:.2f})"
        )
    if full_width:
        print(
            f"\nfull-width RB8: unary p50 {full_width['unary_p50_ms']:.1f} ms, streamed p50 "
            f"{full_width['streamed_p50_ms']:.1f} ms (x{full_width['streamed_over_unary']:.2f})"
        )


if __name__ == "__main__":
    main()
