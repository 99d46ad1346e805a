"""``sbn``: the one console script. Each subcommand lives in the package that owns it.

A command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; its one-line help lives
in ``COMMANDS`` below. A user's error (shared/errors.py's SpikeBottleNetError, or an OSError: a file the
user named that is missing or unreadable, a port taken) ends a command here with one line and exit
status 1, as does a command that needs torch on an install without it (device-lite); any other
exception is a bug and propagates with its traceback.
Modules are imported only when their command runs, so ``sbn --help`` stays fast and the device
image never imports training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from spikebottlenet.shared.errors import SpikeBottleNetError

# what the torch extra of pyproject.toml installs, which a device-lite install lacks
TORCH_EXTRA = ("torch", "numba")

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help)
    "report": (
        "spikebottlenet.sbn.report",
        "per-split-point bytes, compression, FLOPs and energy (paper Tables 1 and 3)",
    ),
    "models": (
        "spikebottlenet.sbn.models",
        "list the embedded demo models: backbone, split point, T, C', bytes, accuracy",
    ),
    "predict": (
        "spikebottlenet.sbn.predict",
        "classify an image with the whole model in one process (the reference path)",
    ),
    "edge": ("spikebottlenet.edge.server", "serve the tail half over gRPC"),
    "serve-ray": (
        "spikebottlenet.edge.ray_serve",
        "serve the tail on Ray Serve (replicas, autoscaling) behind the same gRPC service",
    ),
    "device": ("spikebottlenet.device.app", "serve the head half and the HTTP API (/classify)"),
    "up": ("spikebottlenet.sbn.up", "start edge and device together locally, without Docker"),
    "classify": (
        "spikebottlenet.sbn.client",
        "send images to a running device (POST /classify; several: /classify/batch)",
    ),
    "plan": (
        "spikebottlenet.sbn.plan",
        "choose the split point for a link: latency and energy per split point (3G, 4G, Wi-Fi)",
    ),
    "eval": (
        "spikebottlenet.training.channel_eval",
        "test accuracy when the frames cross a lossy channel (bit flips, erasures)",
    ),
    "export": ("spikebottlenet.sbn.export", "write a split model's head for another runtime (ONNX, NIR)"),
    "bench": ("spikebottlenet.sbn.bench", "latency and throughput: HTTP -> gRPC split path vs. monolithic"),
    "train": ("spikebottlenet.training.cli", "pretrain, fine-tune with a bottleneck, sweep split points, demo models"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sbn", description="SpikeBottleNet: split spiking inference, device <-> edge")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    # Parse the command name first, then let its module define and parse the rest.
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)
        return 2
    name = argv[0]
    try:
        module = importlib.import_module(COMMANDS[name][0])
        command_parser = argparse.ArgumentParser(prog=f"sbn {name}", description=COMMANDS[name][1])
        module.add_arguments(command_parser)
        args = command_parser.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except (SpikeBottleNetError, OSError) as e:
        print(f"sbn {name}: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        if e.name not in TORCH_EXTRA:
            raise
        # a device-lite install (no torch): everything but `sbn device --runtime onnx` and the clients needs it
        print(
            f"sbn {name}: error: this needs {e.name}, which is not installed: pip install torch==2.13.0 "
            "'spikebottlenet[torch]' (`sbn device --runtime onnx` runs without it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
