"""How a process that runs a torch model sets torch up: its thread pools and the device it serves on.

Kept out of shared/settings.py, which a process without torch (the ONNX device) reads as well.
"""

from __future__ import annotations

import logging

import torch

from .errors import ConfigError

log = logging.getLogger("sbn")


def configure_torch_threads(threads: int) -> None:
    """Size torch's thread pools; call once at process start, before any model is loaded.

    torch's default is one intra-op thread per core in every process, so an edge and a device on
    one small machine would each try to use all cores and slow each other down. The inter-op pool
    can only be sized before its first use, hence "once, at start".
    """
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() == threads:
        return
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # a second call in one process (a command run in-process, as tests do): sized already
        log.warning(
            "torch's inter-op pool is already in use with %d threads; it stays so", torch.get_num_interop_threads()
        )


def inference_device(name: str) -> torch.device:
    """The torch device a serving process runs its model on (``cpu``, ``cuda``, ``cuda:N``); ConfigError in one line
    where this machine has no such device."""
    try:
        device = torch.device(name)
    except RuntimeError:  # not a device torch knows at all
        device = None
    if device is not None and device.type == "cpu":
        return device
    if device is None or device.type != "cuda":
        raise ConfigError(f"device {name!r}: a model is served on cpu or cuda[:N]")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"device {name!r}, but torch {torch.__version__} ({build}) sees no CUDA GPU here; use cpu")
    if (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}, but torch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    return device
