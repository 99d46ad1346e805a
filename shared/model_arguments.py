"""The model a one-shot command runs on: ``--checkpoint``, else the embedded demo model that ``--arch`` and
``--split-point`` name (``sbn models`` lists them). ``sbn predict``, ``sbn eval`` and ``sbn bench`` share these flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .backbones import ARCH_CHOICES, DEFAULT_ARCH, resolve_arch
from .checkpoint_metadata import default_checkpoint
from .settings import DEFAULT_SPLIT_POINT


def add_model_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """--checkpoint, or --arch and --split-point choosing an embedded demo model."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help=f"checkpoint to {verb}; default: the embedded demo model for --arch and --split-point",
    )
    parser.add_argument(
        "--arch",
        choices=ARCH_CHOICES,
        default=DEFAULT_ARCH,
        help=f"backbone of the embedded demo model (default: {DEFAULT_ARCH})",
    )
    parser.add_argument(
        "--split-point",
        type=int,
        default=DEFAULT_SPLIT_POINT,
        metavar="K",
        help=f"split point of the embedded demo model (default: {DEFAULT_SPLIT_POINT}); `sbn models` lists them",
    )


def chosen_checkpoint(args: argparse.Namespace) -> Path:
    """The checkpoint those flags name; CheckpointError if no embedded model matches."""
    return args.checkpoint or default_checkpoint(resolve_arch(args.arch), args.split_point)
