"""The table of the shipped models in docs/models.md: accuracy, drop, bytes and the device's measured energy.

    python -m bench.models_table                                   # every embedded model, markdown
    python -m bench.models_table --uploads bench/results/upload_accuracy.json --json

Per embedded split checkpoint: its dataset, C', stride, T, bytes per image and compression (from its
config), its validation and test accuracy and its drop against its backbone (from its info, written when
it was trained), and the device head's energy measured on the dataset's test images (paper counting
mode, ActivityMonitor: the firing rate and synaptic operations of the spikes actually fired; the same
measurement as ``sbn train sweep``). With ``--uploads`` (the JSON of ``python -m bench.upload_accuracy``),
the accuracy on the held-out drawn and typed digits too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import CheckpointInfo, embedded_models
from spikebottlenet.training.datasets import Dataset, load_dataset
from spikebottlenet.training.runtime import start
from spikebottlenet.training.sweep import measure_energy

ENERGY_IMAGES = 2000  # the first test images; the mean energy over them moves by well under 1 %


def describe(checkpoint: CheckpointInfo, data: Dataset, uploads: dict[str, Any] | None) -> dict[str, Any]:
    loaded = load_checkpoint(checkpoint.path)
    geometry, record, bottleneck = loaded.config.geometry(), checkpoint.info, loaded.config.bottleneck
    energy = measure_energy(loaded.model.head, data.take(None, ENERGY_IMAGES), start("fp32", "cpu"))
    name = f"{loaded.config.backbone.arch}/{geometry.point.name}"
    return {
        "model": name,
        "dataset": record.dataset,
        "channels": bottleneck.channels,
        "stride": bottleneck.stride,
        "time_steps": loaded.config.time_steps,
        "transmitted_bytes": geometry.transmitted_bytes,
        "compression": geometry.compression,
        "validation_accuracy": record.validation_accuracy,
        "test_accuracy": record.test_accuracy,
        "backbone_test_accuracy": record.pretrained_accuracy,
        "accuracy_drop": record.accuracy_drop,
        "device_mflops": round(energy.flops / 1e6, 2),
        "firing_rate": round(energy.firing_rate, 3),
        "device_45nm_uj": round(energy.device_45nm_mj * 1e3, 3),
        "device_rolls_uj": round(energy.device_rolls_mj * 1e3, 4),
        "ann_45nm_uj": round(energy.ann_baseline_45nm_mj * 1e3, 3),
        "uploads_accuracy": None if uploads is None or name not in uploads else uploads[name]["all"]["accuracy"],
        "file_mb": round(checkpoint.path.stat().st_size / 1e6, 2),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    def number(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    lines = [
        "| model | data | C′ | stride | T | bytes | compression | validation % | test % | backbone test % | "
        "drop | drawn + typed % | device MFLOPs | firing rate | SNN 45 nm µJ | ROLLS µJ | ANN µJ | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model'].split('/')[1]} | {r['dataset']} | {r['channels']} | {r['stride']} | {r['time_steps']} | "
            f"{r['transmitted_bytes']} | {r['compression']:g}× | {number(r['validation_accuracy'], '.2f')} | "
            f"{r['test_accuracy']:.2f} | {r['backbone_test_accuracy']:.2f} | {r['accuracy_drop']:.2f} | "
            f"{number(r['uploads_accuracy'], '.1f')} | {r['device_mflops']:g} | {r['firing_rate']:g} | "
            f"{r['device_45nm_uj']:g} | {r['device_rolls_uj']:g} | {r['ann_45nm_uj']:g} | {r['file_mb']:g} MB |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=Path, help="bench.upload_accuracy's --json output")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    uploads = json.loads(args.uploads.read_text()) if args.uploads else None
    datasets: dict[tuple[str, str], Dataset] = {}
    rows = []
    for checkpoint in embedded_models():
        key = (checkpoint.info.dataset, checkpoint.config.input_style)
        if key not in datasets:
            datasets[key] = load_dataset(key[0], input_style=key[1])
        rows.append(describe(checkpoint, datasets[key], uploads))
    print(json.dumps(rows, indent=2) if args.json else markdown(rows), end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
