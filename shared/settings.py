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
import logging
import os
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_origin

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource

from .backbones import ARCH_CHOICES, BACKBONES, DEFAULT_ARCH, backbone_config, resolve_arch
from .batching import BatchPolicy
from .checkpoint_metadata import default_checkpoint, embedded_models

log = logging.getLogger("sbn")

DEFAULT_SPLIT_POINT = 8  # every backbone ships an embedded demo model split here
SPLIT_POINT_RANGES = "; ".join(
    f"{arch}: 1..{len(points)}, {points[0].name}..{points[-1].name}"
    for arch, points in ((a, backbone_config(a).split_points()) for a in BACKBONES)
)


class RenamedVariables(PydanticBaseSettingsSource):
    """The environment variables a settings class has renamed (``renamed_variables``: old name -> field), still
    read for one release, each with a FutureWarning naming its new name. The new name wins where both are set."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the old names itself: they are not the fields' own

    def __call__(self) -> dict[str, Any]:
        prefix = self.settings_cls.model_config.get("env_prefix", "")
        values = {}
        for old, name in getattr(self.settings_cls, "renamed_variables", {}).items():
            if old in os.environ:
                warnings.warn(
                    f"{old} is deprecated and will be removed in the next release: set {prefix}{name.upper()} instead",
                    FutureWarning,
                    stacklevel=2,
                )
                values[name] = os.environ[old]
        return values


class ModelSettings(BaseSettings):
    """What both halves need: which checkpoints to load, how many torch threads to run them on, and how concurrent
    requests are batched through them (shared/batching.py)."""

    # environment variables renamed in this release (old name -> field), still read with a warning
    renamed_variables: ClassVar[dict[str, str]] = {}

    # NoDecode: the environment gives a plain, comma-separated string, not a JSON list
    checkpoint: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="checkpoint (.safetensors; the device's onnx runtime: a head exported as .onnx) to serve; "
        "several: repeat the flag, or separate "
        "paths with commas; the first is the default model. Default: the "
        "embedded demo model for arch and split point (a checkpoint carries its "
        "own)",
    )
    models: Literal["all", "one"] | None = Field(
        None,
        description="all: also serve every embedded demo model of every backbone, so that a request may pick "
        "another split point or backbone; one: only the default model (with several checkpoints: "
        "those). Default: all, or one when checkpoint is set. The default model stays checkpoint's "
        "first, else the one for arch and split point",
    )
    arch: str = Field(
        DEFAULT_ARCH, description=f"backbone of the embedded demo model to serve: {', '.join(ARCH_CHOICES)}"
    )
    split_point: int = Field(
        DEFAULT_SPLIT_POINT, ge=1, description=f"split point of the embedded demo model to serve ({SPLIT_POINT_RANGES})"
    )
    threads: int = Field(
        1, ge=1, description="torch intra-op and inter-op threads (edge and device often share a few cores)"
    )
    batch_max_images: int = Field(
        16,
        ge=1,
        description="micro-batching: concurrent requests run through this half's part of the network as "
        "one batch of up to this many images (each still gets its own answer; a larger single "
        "request runs alone)",
    )
    batch_max_wait_ms: float = Field(
        2.0,
        ge=0,
        description="micro-batching: under load (the last batch carried several requests), how long a "
        "batch waits for more to join it; an idle half runs a lone request at once (sbn "
        "serve-ray: always waits, as @serve.batch does)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # earlier sources win: flags, then the environment's current names, then its renamed ones
        return init_settings, env_settings, RenamedVariables(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        return resolve_arch(arch)

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):  # one path, or several separated by commas (the environment's form)
            return [part.strip() for part in str(value).split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _split_point_exists(self) -> ModelSettings:
        backbone_config(self.arch).split_point(self.split_point)  # ValueError naming the valid range
        return self

    @model_validator(mode="after")
    def _models_unset(self) -> ModelSettings:
        # The demo models are small (all six cost a process about 9 MiB and a fraction of a second of start-up more
        # than one), so a new user's ?split_point=K and arch= requests just work. Whoever brings a checkpoint gets
        # what they brought: a demo model could hold the same backbone and split point, or another dataset's labels.
        if self.models is None:
            self.models = "one" if self.checkpoint else "all"
        return self

    @property
    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(self.batch_max_images, self.batch_max_wait_ms / 1e3)

    def checkpoint_path(self) -> Path:
        """The default model's checkpoint: the first given, else the embedded demo model for arch and split point."""
        return self.checkpoint[0] if self.checkpoint else default_checkpoint(self.arch, self.split_point)

    def checkpoint_paths(self) -> list[Path]:
        """Every checkpoint to serve, the default model's first."""
        given = self.checkpoint or [self.checkpoint_path()]
        if self.models != "all":
            return given
        known = {path.resolve() for path in given}
        return [*given, *(info.path for info in embedded_models() if info.path.resolve() not in known)]


S = TypeVar("S", bound=BaseSettings)


def add_settings_arguments(parser: argparse.ArgumentParser, settings_cls: type[BaseSettings]) -> None:
    """One ``--flag`` per field of ``settings_cls``; the help names its environment variable."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    group = parser.add_argument_group("settings", f"each flag overrides the environment variable {prefix}<NAME>")
    for name, field in settings_cls.model_fields.items():
        default = field.default.value if isinstance(field.default, Enum) else field.default
        repeated = get_origin(field.annotation) is list  # list settings: one flag per item
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            metavar=name.upper(),
            action="append" if repeated else "store",
            help=f"{field.description} [{prefix}{name.upper()}, default: {'none' if repeated else default}]",
        )


def settings_from_args(settings_cls: type[S], args: argparse.Namespace) -> S:
    """The settings from the environment, overridden by the flags given; exits with the reason if invalid."""
    overrides = {name: value for name in settings_cls.model_fields if (value := getattr(args, name)) is not None}
    try:
        return settings_cls(**overrides)
    except ValidationError as e:
        raise SystemExit(f"invalid settings: {e}") from None
