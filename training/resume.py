"""Resumable training state: model, optimizer and loss-scaler state plus progress, in one safetensors file.

    tensors    "model.<name>"                   the model's state_dict
               "optimizer.<param index>.<key>"  per-parameter optimizer state (Adam moments, SGD momentum, step)
    metadata   format, run (JSON: what was being trained, to refuse resuming a different run),
               progress (JSON: epochs done, per-epoch history), optimizer_groups (JSON: lr, betas, ...),
               optimizer_scalars (JSON: any non-tensor per-parameter state), scaler (JSON)

Nothing is pickled: the file is raw tensors plus JSON, so loading it back cannot run code. It is
written to a temporary name and renamed, so an interrupt never leaves a half-written state behind,
and one file (rather than weights + sidecar) cannot go out of sync with itself.
The learning-rate schedule is a pure function of the step (see trainer.lr_at), so it has no state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from spikebottlenet.shared.errors import SpikeBottleNetError

FORMAT = "spikebottlenet-train-state/1"


class ResumeError(SpikeBottleNetError, ValueError):
    """A training state (a state file, a sweep's folder) that this run cannot resume: another run's."""


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON values differ, e.g. ["train.lr"]."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [
            d
            for k in sorted(set(saved) | set(current))
            for d in _differences(saved.get(k), current.get(k), f"{prefix}{k}.")
        ]
    return [] if saved == current else [prefix.rstrip(".")]


def save_train_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    run: dict[str, Any],
    progress: dict[str, Any],
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in opt["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    metadata = {
        "format": FORMAT,
        "run": json.dumps(run, sort_keys=True),
        "progress": json.dumps(progress),
        "optimizer_groups": json.dumps(opt["param_groups"]),
        "optimizer_scalars": json.dumps(scalars),
        "scaler": json.dumps(scaler.state_dict()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_train_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, run: dict[str, Any]
) -> dict[str, Any]:
    """Restore model, optimizer and scaler in place from ``path``; returns the saved progress."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ResumeError(f"{path} is not a training-state file (format {metadata.get('format')!r})")
        changed = _differences(json.loads(metadata["run"]), json.loads(json.dumps(run)))
        if changed:
            raise ResumeError(
                f"{path} belongs to a different run (differs in: {', '.join(changed)}); "
                f"delete it or pass --restart to start over"
            )
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in json.loads(metadata["optimizer_scalars"]).items():
        state.setdefault(int(index), {}).update(values)
    groups = json.loads(metadata["optimizer_groups"])
    for group, current in zip(groups, optimizer.param_groups, strict=True):  # JSON has no tuples (Adam's betas)
        group.update({k: tuple(v) for k, v in group.items() if isinstance(current.get(k), tuple)})
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scaler_state = json.loads(metadata["scaler"])
    if scaler_state:  # empty when saved without fp16 loss scaling (e.g. resumed on a different device)
        scaler.load_state_dict(scaler_state)
    return json.loads(metadata["progress"])
