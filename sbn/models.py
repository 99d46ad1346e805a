"""``sbn models``: the demo checkpoints embedded in the package, one line each.

    sbn models            # arch, split point, T, C', bytes, compression, dataset, input style, accuracies, drop, file
    sbn models --json

``sbn up --arch ARCH --split-point K`` (and ``SBN_ARCH`` / ``SBN_SPLIT_POINT`` under Docker) serves any
of them; read from the checkpoints' own metadata, so the list is always what is shipped.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from spikebottlenet.shared.checkpoint_metadata import embedded_models

from .report import render_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per model")


def run(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []  # JSON objects
    for ckpt in embedded_models():
        geometry, record = ckpt.config.geometry(), ckpt.info
        rows.append(
            {
                "arch": ckpt.config.backbone.arch,
                "split_point": geometry.point.index,
                "split_point_name": geometry.point.name,
                "time_steps": ckpt.config.time_steps,
                "channels": ckpt.config.require_bottleneck().channels,
                "spike_shape": list(geometry.spike_shape),
                "transmitted_bytes": geometry.transmitted_bytes,
                # mean entropy-codec payload on the test split (training/entropy_fit.py); None: no fitted model
                "entropy_bytes": record.entropy_codec.entropy_mean_bytes
                if ckpt.config.entropy_model and record.entropy_codec
                else None,
                "compression_ratio": geometry.compression,
                "dataset": record.dataset,
                "input_style": ckpt.config.input_style,
                "validation_accuracy": record.validation_accuracy,  # None: trained before validation splits
                "test_accuracy": record.test_accuracy,
                "accuracy_drop": record.accuracy_drop,
                "info_verified": ckpt.info_verified,  # false: edited after saving, or saved before info_digest
                "fingerprint": ckpt.fingerprint,
                "file": ckpt.path.name,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = [
        "arch",
        "split",
        "k",
        "T",
        "C'",
        "bytes",
        "entropy B",
        "compression",
        "dataset",
        "input",
        "validation %",
        "test %",
        "drop",
        "file",
    ]
    lines = [
        [
            r["arch"],
            r["split_point_name"],
            str(r["split_point"]),
            str(r["time_steps"]),
            str(r["channels"]),
            str(r["transmitted_bytes"]),
            "-" if r["entropy_bytes"] is None else f"{r['entropy_bytes']:g}",
            f"{r['compression_ratio']:g}x",
            str(r["dataset"]),
            r["input_style"],
            "-" if r["validation_accuracy"] is None else f"{r['validation_accuracy']:.2f}",
            "-"
            if r["test_accuracy"] is None
            else f"{r['test_accuracy']:.2f}" + ("" if r["info_verified"] else " (unverified)"),
            "-" if r["accuracy_drop"] is None else f"{r['accuracy_drop']:+.2f}",
            r["file"],
        ]
        for r in rows
    ]
    print("\n".join(render_table(header, lines)))
    return 0
