"""Accuracy of the shipped demo models on digits they never saw, through the real services.

    python -m bench.upload_accuracy                         # every embedded model, a fresh held-out set
    python -m bench.upload_accuracy --images DIR --json     # a set written by bench/drawn_digits.py

For each model an ``sbn edge`` and an ``sbn device`` process start on 127.0.0.1, and every image of
the held-out set (bench/drawn_digits.py: pen strokes and typed fonts, 600 images) is POSTed to
/classify as a user would send it. Reported per model and per way of making the images: accuracy,
and the share flagged ``uncertain``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from spikebottlenet.shared.checkpoint_metadata import CheckpointInfo, embedded_models
from spikebottlenet.shared.processes import free_port, spawn, stop_all, wait_for_edge, wait_for_http

from .drawn_digits import make_set


def classify_all(url: str, images: Path) -> dict[str, Any]:
    """POST every image of ``images``'s manifest to ``url``/classify; accuracy per method and overall."""
    manifest = json.loads((images / "manifest.json").read_text())
    correct: dict[str, int] = defaultdict(int)
    flagged: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    with httpx.Client(base_url=url, timeout=30) as client:
        for entry in manifest:
            response = client.post(
                "/classify", files={"file": (entry["file"], (images / entry["file"]).read_bytes(), "image/png")}
            )
            response.raise_for_status()
            body = response.json()
            for key in (entry["method"], "all"):
                total[key] += 1
                correct[key] += body["label"] == str(entry["label"])
                flagged[key] += bool(body.get("uncertain"))
    return {
        key: {
            "images": total[key],
            "accuracy": round(100 * correct[key] / total[key], 2),
            "uncertain": round(100 * flagged[key] / total[key], 2),
        }
        for key in total
    }


def measure(checkpoint: CheckpointInfo, images: Path) -> dict[str, Any]:
    """Start an edge and a device for ``checkpoint``, classify ``images`` through them, stop both."""
    edge_port, device_port = free_port(), free_port()
    # the children's stdout (uvicorn's access log) goes to this process's stderr: stdout is for results
    edge = spawn(
        "edge",
        "--checkpoint",
        str(checkpoint.path),
        "--host",
        "127.0.0.1",
        "--port",
        str(edge_port),
        stdout=sys.stderr.fileno(),
    )
    processes = [edge]
    try:
        wait_for_edge(f"127.0.0.1:{edge_port}", edge)
        device = spawn(
            "device",
            "--checkpoint",
            str(checkpoint.path),
            "--host",
            "127.0.0.1",
            "--port",
            str(device_port),
            "--edge-address",
            f"127.0.0.1:{edge_port}",
            stdout=sys.stderr.fileno(),
        )
        processes.append(device)
        url = f"http://127.0.0.1:{device_port}"
        wait_for_http(f"{url}/readyz", device)
        return classify_all(url, images)
    finally:
        stop_all(processes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="a held-out set from bench/drawn_digits.py (default: make one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        images = args.images or Path(tmp)
        if args.images is None:
            make_set(images)
        results = {
            f"{c.config.backbone.arch}/{c.config.split_point.name}": measure(c, images) for c in embedded_models()
        }
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
        return 0
    print("| model | strokes % | fonts % | all % | flagged uncertain % |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['strokes']['accuracy']:.1f} | {r['fonts']['accuracy']:.1f} | "
            f"{r['all']['accuracy']:.1f} | {r['all']['uncertain']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
