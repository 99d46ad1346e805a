"""The wire's trade-offs as pictures: bytes against accuracy for rate-aware checkpoints, and accuracy
against bit error rate for raw coding, entropy coding in one chunk and in several, and entropy coding
with Reed–Solomon parity.

    python -m bench.wire_report --rate runs/wire/rb8_lambda*.safetensors \\
        --noise shared/models/digits_rb3.safetensors runs/wire/rb3_flip0.01.safetensors --out bench/results [--json]

--rate: each checkpoint's test accuracy and mean entropy payload (recorded in its info by
``sbn train fit-codec`` / ``refine``), labelled with the rate weight it was refined with.
--noise: each checkpoint's digits test accuracy through a binary symmetric channel at several bit
error rates (training/channel_eval.py), one panel per checkpoint, labelled with the flip and erasure
rates it was trained with; --chunks and --fec set the chunked and protected schemes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from spikebottlenet.shared.checkpoint_metadata import read_checkpoint_info
from spikebottlenet.training.channel_eval import evaluate  # noqa: E402

BERS = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def label(term: float | None) -> str:
    """A wire term the checkpoint was refined with; None: it was not refined (a shipped one)."""
    return "0 (shipped)" if term is None else f"{term:g}"


def schemes(chunks: int, fec: int) -> dict[str, tuple[str, int, int]]:
    """Name -> (codec, chunks, FEC parity bytes) of each curve."""
    return {
        "raw": ("raw", 1, 0),
        "entropy": ("entropy", 1, 0),
        f"entropy, {chunks} chunks": ("entropy", chunks, 0),
        f"entropy + RS({fec})": ("entropy", 1, fec),
        f"entropy, {chunks} chunks + RS({fec})": ("entropy", chunks, fec),
    }


def rate_points(paths: list[Path]) -> list[dict]:
    points = []
    for path in paths:
        record = read_checkpoint_info(path).info
        wire = record.wire_training
        points.append(
            {
                "checkpoint": path.name,
                "rate_weight": label(wire.rate_weight if wire else None),
                "test_accuracy": record.test_accuracy,
                "entropy_bytes": record.entropy_codec.entropy_mean_bytes,
                "raw_bytes": record.entropy_codec.raw_bytes,
            }
        )
    return points


def ber_curves(paths: list[Path], chunks: int, fec: int) -> list[dict]:
    curves = []
    for path in paths:
        wire = read_checkpoint_info(path).info.wire_training
        flip, erase = label(wire.flip_probability if wire else None), label(wire.erase_probability if wire else None)
        for name, (codec, n, parity) in schemes(chunks, fec).items():
            for ber in BERS:
                result = evaluate(path, f"bsc:{ber}", codec, chunks=n, fec_parity=parity)
                curves.append(
                    {
                        "checkpoint": path.name,
                        "flip_probability": flip,
                        "erase_probability": erase,
                        "scheme": name,
                        "ber": ber,
                        "accuracy": result["accuracy"],
                        "wire_bytes": result["mean_payload_bytes"],
                        "erased_chunks": result["erased_chunks"],
                        "chunks_sent": result["chunks_sent"],
                    }
                )
    return curves


def draw(rate: list[dict], curves: list[dict], out: Path) -> None:
    if rate:
        figure, axis = plt.subplots(figsize=(5.5, 4))
        axis.plot([p["entropy_bytes"] for p in rate], [p["test_accuracy"] for p in rate], "o")  # points: one run each
        for p in rate:
            axis.annotate(
                f"λ={p['rate_weight']}",
                (p["entropy_bytes"], p["test_accuracy"]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        axis.set_xlabel("entropy-coded payload per image (bytes)")
        axis.set_ylabel("digits test accuracy (%)")
        axis.set_title("Rate-aware refinement: bytes against accuracy", fontsize=10)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / "wire_rate.png", dpi=120)
    if curves:
        names = list(dict.fromkeys(c["checkpoint"] for c in curves))
        figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), sharey=True, squeeze=False)
        for axis, name in zip(axes[0], names, strict=True):
            mine = [c for c in curves if c["checkpoint"] == name]
            for scheme, style in zip(
                dict.fromkeys(c["scheme"] for c in mine), ("o-", "s--", "^-.", "d-", "v:"), strict=False
            ):
                rows = [c for c in mine if c["scheme"] == scheme]
                axis.plot(
                    [max(c["ber"], 1e-5) for c in rows],
                    [c["accuracy"] for c in rows],
                    style,
                    label=f"{scheme} ({rows[0]['wire_bytes']:.0f} B)",
                )
            axis.set_xscale("log")
            axis.set_xlabel("bit error rate (BSC; 0 drawn at 1e-5)")
            axis.set_title(
                f"{name}\ntrained with flips {mine[0]['flip_probability']}, erasures {mine[0]['erase_probability']}",
                fontsize=8,
            )
            axis.legend(fontsize=7)
            axis.grid(alpha=0.3)
        axes[0][0].set_ylabel("digits test accuracy (%)")
        figure.tight_layout()
        figure.savefig(out / "wire_ber.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=Path, nargs="*", default=[], help="rate-aware checkpoints")
    parser.add_argument("--noise", type=Path, nargs="*", default=[], help="checkpoints for the BER curves")
    parser.add_argument("--chunks", type=int, default=4, help="chunks of the chunked entropy schemes (default 4)")
    parser.add_argument("--fec", type=int, default=16, help="Reed–Solomon parity bytes per block (default 16)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for wire_rate.png and wire_ber.png")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rate, curves = rate_points(args.rate), ber_curves(args.noise, args.chunks, args.fec)
    draw(rate, curves, args.out)
    print(
        json.dumps({"rate": rate, "ber": curves}, indent=2)
        if args.json
        else "\n".join(
            [
                *(
                    f"{p['checkpoint']}: λ {p['rate_weight']}, {p['test_accuracy']:.2f} %, {p['entropy_bytes']} B"
                    for p in rate
                ),
                *(
                    f"{c['checkpoint']} {c['scheme']} ({c['wire_bytes']:.1f} B) BER {c['ber']:g}: "
                    f"{c['accuracy']:.2f} %, {c['erased_chunks']} of {c['chunks_sent']} chunks erased"
                    for c in curves
                ),
            ]
        )
    )


if __name__ == "__main__":
    main()
