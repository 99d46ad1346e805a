"""The sweep's report: the paper's Table 1 and Table 3 columns as CSV / JSON / Markdown, and two plots.

Table 1 (communication):  split point, C', stride, T, bytes sent, BottleNet++ bytes (the paper's ANN
                          baseline), bit reduction = BottleNet++ bytes / ours, compression against the
                          uncompressed RBk spikes, accuracy, accuracy drop
Table 3 (device energy):  measured SNN energy at 45 nm and on ROLLS, the ANN baseline (the same layers
                          as 45 nm MACs), and the ANN / SNN ratios
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from spikebottlenet.shared.backbones import BackboneConfig  # noqa: E402

if TYPE_CHECKING:
    from .sweep import Result

COLUMNS = (  # (key, Markdown header)
    ("split_point_name", "split"),
    ("channels", "C'"),
    ("stride", "stride"),
    ("time_steps", "T"),
    ("transmitted_bytes", "bytes"),
    ("bottlenetpp_bytes", "BottleNet++ bytes"),
    ("bit_reduction", "bit reduction"),
    ("compression", "compression"),
    ("test_accuracy", "accuracy %"),
    ("accuracy_drop", "drop"),
    ("device_45nm_mj", "SNN 45 nm mJ"),
    ("device_rolls_mj", "SNN ROLLS mJ"),
    ("ann_baseline_45nm_mj", "ANN mJ"),
    ("ann_over_45nm", "ANN / SNN 45 nm"),
    ("ann_over_rolls", "ANN / ROLLS"),
    ("firing_rate", "firing rate"),
)


def table_row(r: Result, backbone: BackboneConfig) -> dict[str, Any]:
    bottlenetpp = backbone.bottlenetpp_bytes(r.split_point)
    return {
        **asdict(r),
        "split_point_name": backbone.split_point(r.split_point).name,
        "bottlenetpp_bytes": bottlenetpp,
        "bit_reduction": round(bottlenetpp / r.transmitted_bytes, 2) if bottlenetpp else None,
        "ann_over_45nm": round(r.ann_baseline_45nm_mj / r.device_45nm_mj, 2) if r.device_45nm_mj else None,
        "ann_over_rolls": round(r.ann_baseline_45nm_mj / r.device_rolls_mj, 2) if r.device_rolls_mj else None,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, Any]], max_drop: float, backbone: BackboneConfig) -> str:
    lines = [
        f"{backbone.arch}, width {backbone.width_multiplier:g}. Selected bottleneck per split point: fewest "
        f"bytes with an accuracy drop of at most {max_drop:g} points.",
        "",
    ]
    if backbone.bottlenetpp_bytes(1) is None:
        lines += ["BottleNet++ bytes: the paper has figures only for the full-width Spike ResNet50 (-).", ""]
    lines += ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[k]) for k, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _split_point_axis(ax: plt.Axes, backbone: BackboneConfig) -> None:
    points = backbone.split_points()
    ax.set_xticks([p.index for p in points], [p.name for p in points], rotation=90 if len(points) > 12 else 0)
    ax.set_xlabel(f"split point ({backbone.arch})")


def plot_bytes(selected: dict[int, Result], path: Path, backbone: BackboneConfig) -> None:
    points = sorted(selected)
    fig, ax = plt.subplots(figsize=(8, 4))
    indices = [p.index for p in backbone.split_points()]
    # BottleNet++'s figures, where the paper has them for this very model
    paper = {k: b for k in indices if (b := backbone.bottlenetpp_bytes(k)) is not None}
    if paper:
        ax.plot(list(paper), list(paper.values()), "s--", label="BottleNet++ (paper)")
    ax.plot(points, [selected[k].uncompressed_bytes for k in points], "^:", label="uncompressed block spikes")
    ax.plot(points, [selected[k].transmitted_bytes for k in points], "o-", label="SpikeBottleNet (ours)")
    ax.set(yscale="log", ylabel="bytes per image", title="Transmitted data per split point")
    _split_point_axis(ax, backbone)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_energy(selected: dict[int, Result], path: Path, backbone: BackboneConfig) -> None:
    points = sorted(selected)
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label, style in (
        ("ann_baseline_45nm_mj", "ANN baseline (45 nm MACs)", "s--"),
        ("device_45nm_mj", "SNN, 45 nm", "o-"),
        ("device_rolls_mj", "SNN, ROLLS", "^-"),
    ):
        ax.plot(points, [getattr(selected[k], key) for k in points], style, label=label)
    ax.set(
        yscale="log",
        ylabel="device energy per image (mJ)",
        title="Device energy per split point (measured on the test set)",
    )
    _split_point_axis(ax, backbone)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    results: Sequence[Result], selected: dict[int, Result], out: Path, max_drop: float, backbone: BackboneConfig
) -> None:
    """table.csv / table.json / table.md and bytes.png / energy.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [table_row(selected[k], backbone) for k in sorted(selected)]
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [k for k, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.json").write_text(
        json.dumps(
            {
                "max_drop": max_drop,
                "arch": backbone.arch,
                "width_multiplier": backbone.width_multiplier,
                "selected": rows,
                "all": [table_row(r, backbone) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    (out / "table.md").write_text(markdown(rows, max_drop, backbone))
    plot_bytes(selected, out / "bytes.png", backbone)
    plot_energy(selected, out / "energy.png", backbone)
