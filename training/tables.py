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

from shared.bottleneck import BOTTLENETPP_BYTES  # noqa: E402
from shared.spiking_resnet import NUM_BLOCKS, SpikingResNetConfig  # noqa: E402

if TYPE_CHECKING:
    from .sweep import Result

COLUMNS = (  # (key, Markdown header)
    ("split_point", "split"),
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


def table_row(r: Result) -> dict[str, Any]:
    bottlenetpp = BOTTLENETPP_BYTES[r.split_point - 1]
    return {
        **asdict(r),
        "bottlenetpp_bytes": bottlenetpp,
        "bit_reduction": round(bottlenetpp / r.transmitted_bytes, 2),
        "ann_over_45nm": round(r.ann_baseline_45nm_mj / r.device_45nm_mj, 2) if r.device_45nm_mj else None,
        "ann_over_rolls": round(r.ann_baseline_45nm_mj / r.device_rolls_mj, 2) if r.device_rolls_mj else None,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, Any]], max_drop: float, backbone: SpikingResNetConfig) -> str:
    lines = [f"Selected bottleneck per split point: fewest bytes with an accuracy drop of at most {max_drop:g} points.",
             ""]
    if backbone.width_multiplier != 1.0:
        lines += [f"Backbone width {backbone.width_multiplier:g}: BottleNet++ bytes are the paper's full-width "
                  f"figures, so the bit reduction only compares like with like at width 1.", ""]
    lines += ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[k]) for k, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_bytes(selected: dict[int, Result], path: Path) -> None:
    points = sorted(selected)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(range(1, NUM_BLOCKS + 1), BOTTLENETPP_BYTES, "s--", label="BottleNet++ (paper)")
    ax.plot(points, [selected[k].uncompressed_bytes for k in points], "^:", label="uncompressed RBk spikes")
    ax.plot(points, [selected[k].transmitted_bytes for k in points], "o-", label="SpikeBottleNet (ours)")
    ax.set(yscale="log", xlabel="split point RBk", ylabel="bytes per image", xticks=range(1, NUM_BLOCKS + 1),
           title="Transmitted data per split point")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_energy(selected: dict[int, Result], path: Path) -> None:
    points = sorted(selected)
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label, style in (("ann_baseline_45nm_mj", "ANN baseline (45 nm MACs)", "s--"),
                              ("device_45nm_mj", "SNN, 45 nm", "o-"),
                              ("device_rolls_mj", "SNN, ROLLS", "^-")):
        ax.plot(points, [getattr(selected[k], key) for k in points], style, label=label)
    ax.set(yscale="log", xlabel="split point RBk", ylabel="device energy per image (mJ)",
           xticks=range(1, NUM_BLOCKS + 1), title="Device energy per split point (measured on the test set)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: Sequence[Result], selected: dict[int, Result], out: Path, max_drop: float,
                 backbone: SpikingResNetConfig) -> None:
    """table.csv / table.json / table.md and bytes.png / energy.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [table_row(selected[k]) for k in sorted(selected)]
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [k for k, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.json").write_text(json.dumps({
        "max_drop": max_drop,
        "width_multiplier": backbone.width_multiplier,
        "selected": rows,
        "all": [table_row(r) for r in results],
    }, indent=2) + "\n")
    (out / "table.md").write_text(markdown(rows, max_drop, backbone))
    plot_bytes(selected, out / "bytes.png")
    plot_energy(selected, out / "energy.png")
