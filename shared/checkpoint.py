"""Checkpoints: safetensors weights with the whole model config and a fingerprint in the metadata.

The metadata's layout, and reading it without the weights, are in shared/checkpoint_metadata.py; this
module writes checkpoints and loads their weights into the torch model, verifying each part's digest.

Nothing here unpickles: safetensors stores raw tensors and a JSON header, so loading an untrusted
file cannot execute code.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, overload

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .backbones.spiking_backbone import SpikingBackbone
from .checkpoint_metadata import (
    FORMAT,
    CheckpointError,
    CheckpointInfo,
    TrainingRecord,
    canonical_json,
    info_digest,
    model_fingerprint,
    part_names,
    part_of,
    read_checkpoint_info,
)
from .model_config import ModelConfig
from .split_model import SpikeBottleNet, SplitHead, SplitTail, build_model

log = logging.getLogger("sbn.checkpoint")


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    model: nn.Module, config: ModelConfig, path: str | os.PathLike, info: TrainingRecord | None = None
) -> str:
    """Write ``model``'s weights, ``config`` and ``info`` (None: an untrained placeholder's); returns the
    fingerprint."""
    info = TrainingRecord() if info is None else info
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in part_names(config)}
    for name, tensor in state.items():
        part = part_of(name, config)
        if part not in parts:
            raise CheckpointError(f"tensor {name!r} belongs to no part of this model ({', '.join(parts)})")
        parts[part][name] = tensor
    digests = {p: _digest(ts) for p, ts in parts.items()}
    fingerprint = model_fingerprint(config.to_dict(), digests)
    metadata = {
        "format": FORMAT,
        "config": canonical_json(config.to_dict()),
        "digests": canonical_json(digests),
        "fingerprint": fingerprint,
        "info": canonical_json(info.to_dict()),
        "info_digest": info_digest(fingerprint, info.to_dict()),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    # safetensors writes files 0600; a checkpoint is meant to be served by other users (the
    # containers run as an unprivileged uid), so make it readable as any ordinary file would be
    Path(path).chmod(0o644)
    return fingerprint


def update_info(path: str | os.PathLike, info: TrainingRecord) -> None:
    """Replace a checkpoint's info in place, with its digest; tensors, config and digests, hence the
    fingerprint, stay byte for byte as stored (the config is not re-serialized by this version's
    ModelConfig). The new info is verified from then on, whatever the old one was: writing it vouches for it."""
    checked = read_checkpoint_info(path)  # only an intact checkpoint is rewritten
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    save_file(
        tensors,
        str(path),
        metadata={
            **metadata,
            "info": canonical_json(info.to_dict()),
            "info_digest": info_digest(checked.fingerprint, info.to_dict()),
        },
    )
    Path(path).chmod(0o644)
    if read_checkpoint_info(path).fingerprint != checked.fingerprint:
        raise CheckpointError(f"{path}: rewriting the info changed the fingerprint")


Model = TypeVar("Model", bound=nn.Module)


@dataclass
class LoadedModel(Generic[Model]):
    model: Model
    checkpoint: CheckpointInfo

    @property
    def config(self) -> ModelConfig:
        return self.checkpoint.config

    @property
    def fingerprint(self) -> str:
        return self.checkpoint.fingerprint


@overload
def load_checkpoint(
    path: str | os.PathLike, part: Literal["full"] = "full"
) -> LoadedModel[SpikeBottleNet | SpikingBackbone]: ...
@overload
def load_checkpoint(path: str | os.PathLike, part: Literal["head"]) -> LoadedModel[SplitHead]: ...
@overload
def load_checkpoint(path: str | os.PathLike, part: Literal["tail"]) -> LoadedModel[SplitTail]: ...
def load_checkpoint(path: str | os.PathLike, part: Literal["full", "head", "tail"] = "full") -> LoadedModel[Any]:
    """Build ``part`` ("full", "head" or "tail") and load its weights, verifying them first.

    Only the tensors of the requested part are read from disk; their digest must match the one
    recorded at save time, so a file whose weights were changed is refused before use.
    """
    ckpt = read_checkpoint_info(path)
    model = build_model(ckpt.config, part)
    wanted = part_names(ckpt.config) if part == "full" else (part,)
    prefix = "" if part == "full" else f"{part}."
    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(ckpt.path), framework="pt") as f:
            for name in f.keys():
                if part_of(name, ckpt.config) in wanted:
                    state[name] = f.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path}: cannot read tensors: {e}") from None
    for p in wanted:
        got = _digest({k: v for k, v in state.items() if part_of(k, ckpt.config) == p})
        if got != ckpt.digests[p]:
            raise CheckpointError(
                f"{ckpt.path}: the {p} weights do not match their recorded digest (modified after saving?)"
            )
    try:
        model.load_state_dict({k[len(prefix) :]: v for k, v in state.items()})
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.path}: weights do not fit the model in its config: {e}") from None
    if not ckpt.info_verified:
        log.warning(
            "%s: its info (trained flag, accuracies) does not match its info_digest (edited, or saved "
            "before info_digest existed): treated as untrained until its info is rewritten with "
            "spikebottlenet.shared.checkpoint.update_info (as `sbn train calibrate` does)",
            ckpt.path,
        )
    return LoadedModel(model.eval(), ckpt)
