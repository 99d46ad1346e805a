"""Settings of the serving processes (``sbn edge``, ``sbn device``) and the flags that override them.

Each process has one pydantic-settings class read from its environment variables (``SBN_EDGE_*``,
``SBN_DEVICE_*``). Every field of that class is also a command-line flag (``--max-batch`` for
``max_batch``), generated here, so a setting is defined once: its name, type, default, bounds and
help. A flag given on the command line wins over the environment; flags left out are not passed
on, so the environment and then the field default apply. Both sources are validated by the same
model.
"""

from __future__ import annotations

import argparse
from enum import Enum
from pathlib import Path
from typing import TypeVar

import torch
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings

from .backbones import ARCH_CHOICES, BACKBONES, DEFAULT_ARCH, backbone_config, resolve_arch
from .checkpoint import default_checkpoint

DEFAULT_SPLIT_POINT = 8  # every backbone ships an embedded demo model split here
SPLIT_POINT_RANGES = "; ".join(f"{arch}: 1..{len(points)}, {points[0].name}..{points[-1].name}"
                               for arch, points in ((a, cls().split_points()) for a, cls in BACKBONES.items()))


class ModelSettings(BaseSettings):
    """What both halves need: which checkpoint to load, and how many torch threads to run it on."""

    checkpoint: Path | None = Field(
        None, description="checkpoint (.safetensors) to serve; default: the embedded demo model for arch and "
                          "split point (a checkpoint carries its own)")
    arch: str = Field(
        DEFAULT_ARCH, description=f"backbone of the embedded demo model to serve: {', '.join(ARCH_CHOICES)}")
    split_point: int = Field(
        DEFAULT_SPLIT_POINT, ge=1, description=f"split point of the embedded demo model to serve ({SPLIT_POINT_RANGES})")
    threads: int = Field(
        1, ge=1, description="torch intra-op and inter-op threads (edge and device often share a few cores)")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        return resolve_arch(arch)

    @model_validator(mode="after")
    def _split_point_exists(self) -> ModelSettings:
        backbone_config(self.arch).split_point(self.split_point)  # ValueError naming the valid range
        return self

    def checkpoint_path(self) -> Path:
        return self.checkpoint or default_checkpoint(self.arch, self.split_point)


def configure_torch_threads(threads: int) -> None:
    """Size torch's thread pools; call once at process start, before any model is loaded.

    torch's default is one intra-op thread per core in every process, so an edge and a device on
    one small machine would each try to use all cores and slow each other down. The inter-op pool
    can only be sized before its first use, hence "once, at start".
    """
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)


S = TypeVar("S", bound=BaseSettings)


def add_settings_arguments(parser: argparse.ArgumentParser, settings_cls: type[BaseSettings]) -> None:
    """One ``--flag`` per field of ``settings_cls``; the help names its environment variable."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    group = parser.add_argument_group("settings", f"each flag overrides the environment variable {prefix}<NAME>")
    for name, field in settings_cls.model_fields.items():
        default = field.default.value if isinstance(field.default, Enum) else field.default
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper(),
                           help=f"{field.description} [{prefix}{name.upper()}, default: {default}]")


def settings_from_args(settings_cls: type[S], args: argparse.Namespace) -> S:
    """The settings from the environment, overridden by the flags given; exits with the reason if invalid."""
    overrides = {name: value for name in settings_cls.model_fields if (value := getattr(args, name)) is not None}
    try:
        return settings_cls(**overrides)
    except ValidationError as e:
        raise SystemExit(f"invalid settings: {e}") from None
