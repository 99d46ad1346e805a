"""The wire's trade-offs as pictures: bytes against accuracy for rate-aware checkpoints, and accuracy
against bit error rate for raw and entropy coding.

    python -m bench.wire_report --rate runs/wire/rb8_lambda*.safetensors \\
        --noise shared/models/digits_rb3.safetensors runs/wire/rb3_flip0.01.safetensors --out bench/results [--json]

--rate: each checkpoint's test accuracy and mean entropy payload (recorded in its info by
``sbn train fit-codec`` / ``refine``), labelled with the rate weight it was refined with.
--noise: each checkpoint's digits test accuracy through a binary symmetric channel at several bit
error rates, raw and entropy coded (training/channel_eval.py), labelled with its training flip rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shared.checkpoint import read_checkpoint_info  # noqa: E402
from training.channel_eval import evaluate  # noqa: E402

BERS = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def label(path: Path, key: str) -> str:
    info = read_checkpoint_info(path).info
    return f"{info['wire_training'][key]:g}" if "wire_training" in info else "0 (shipped)"


def rate_points(paths: list[Path]) -> list[dict]:
    points = []
    for path in paths:
        info = read_checkpoint_info(path).info
        points.append({"checkpoint": path.name, "rate_weight": label(path, "rate_weight"),
                       "test_accuracy": info["test_accuracy"], "entropy_bytes": info["entropy_codec"]["entropy_mean_bytes"],
                       "raw_bytes": info["entropy_codec"]["raw_bytes"]})
    return points


def ber_curves(paths: list[Path]) -> list[dict]:
    return [{"checkpoint": path.name, "flip_probability": label(path, "flip_probability"), "codec": codec,
             "ber": ber, "accuracy": evaluate(path, f"bsc:{ber}", codec)["accuracy"]}
            for path in paths for codec in ("raw", "entropy") for ber in BERS]


def draw(rate: list[dict], curves: list[dict], out: Path) -> None:
    if rate:
        figure, axis = plt.subplots(figsize=(5.5, 4))
        axis.plot([p["entropy_bytes"] for p in rate], [p["test_accuracy"] for p in rate], "o")  # points: one run each
        for p in rate:
            axis.annotate(f"λ={p['rate_weight']}", (p["entropy_bytes"], p["test_accuracy"]), fontsize=8,
                          xytext=(4, 4), textcoords="offset points")
        axis.set_xlabel("entropy-coded payload per image (bytes)")
        axis.set_ylabel("digits test accuracy (%)")
        axis.set_title("Rate-aware refinement: bytes against accuracy", fontsize=10)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / "wire_rate.png", dpi=120)
    if curves:
        figure, axis = plt.subplots(figsize=(6.5, 4))
        for name in dict.fromkeys(c["checkpoint"] for c in curves):
            for codec, style in (("raw", "o-"), ("entropy", "s--")):
                rows = [c for c in curves if c["checkpoint"] == name and c["codec"] == codec]
                axis.plot([max(c["ber"], 1e-4) for c in rows], [c["accuracy"] for c in rows], style,
                          label=f"{name} (trained with flips {rows[0]['flip_probability']}), {codec}")
        axis.set_xscale("log")
        axis.set_xlabel("bit error rate (binary symmetric channel; 0 drawn at 1e-4)")
        axis.set_ylabel("digits test accuracy (%)")
        axis.set_title("Accuracy through a noisy link", fontsize=10)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / "wire_ber.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=Path, nargs="*", default=[], help="rate-aware checkpoints")
    parser.add_argument("--noise", type=Path, nargs="*", default=[], help="checkpoints for the BER curves")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for wire_rate.png and wire_ber.png")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rate, curves = rate_points(args.rate), ber_curves(args.noise)
    draw(rate, curves, args.out)
    print(json.dumps({"rate": rate, "ber": curves}, indent=2) if args.json else
          "\n".join([*(f"{p['checkpoint']}: λ {p['rate_weight']}, {p['test_accuracy']:.2f} %, {p['entropy_bytes']} B"
                       for p in rate),
                     *(f"{c['checkpoint']} {c['codec']} BER {c['ber']:g}: {c['accuracy']:.2f} %" for c in curves)]))


if __name__ == "__main__":
    main()
