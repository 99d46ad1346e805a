"""The backbone registry: ``arch`` names (stored in every checkpoint) -> backbone config classes.

    config = backbone_config("mobilenetv2", width_multiplier=0.25, num_classes=10)
    config.split_points()       # (SplitPoint(1, "IRB1", 16, 32, 32), ...)
    SpikingBackbone(config, time_steps=4)    # spiking_backbone.py: the torch model

Each backbone lives in its own module and registers its config class here; nothing outside that
module knows how many blocks it has or what they are called.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import BackboneConfig, SplitPoint
from .spiking_mobilenetv2 import SpikingMobileNetV2Config
from .spiking_resnet import SpikingResNetConfig

BACKBONES: dict[str, type[BackboneConfig]] = {cls.ARCH: cls for cls in (SpikingResNetConfig, SpikingMobileNetV2Config)}
ALIASES: dict[str, str] = {alias: cls.ARCH for cls in BACKBONES.values() for alias in cls.ALIASES}
DEFAULT_ARCH = SpikingResNetConfig.ARCH
ARCH_CHOICES = (*BACKBONES, *ALIASES)


def resolve_arch(name: str) -> str:
    """The registry name for ``name`` or one of its aliases ("resnet50" -> "spiking_resnet50")."""
    arch = ALIASES.get(name, name)
    if arch not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; expected one of {', '.join(ARCH_CHOICES)}")
    return arch


def backbone_config(arch: str, **fields: Any) -> BackboneConfig:
    """A backbone config by name or alias, with any of its fields set."""
    cls = BACKBONES[resolve_arch(arch)]
    return cls(**fields)


def backbone_config_from_dict(d: dict[str, Any]) -> BackboneConfig:
    """The config stored in a checkpoint; ``arch`` selects the backbone."""
    return BACKBONES[resolve_arch(d["arch"])].from_dict(d)


__all__ = [
    "ALIASES",
    "ARCH_CHOICES",
    "BACKBONES",
    "DEFAULT_ARCH",
    "BackboneConfig",
    "SpikingMobileNetV2Config",
    "SpikingResNetConfig",
    "SplitPoint",
    "backbone_config",
    "backbone_config_from_dict",
    "resolve_arch",
]
