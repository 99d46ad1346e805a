"""The head run by torch: the device's default runtime, and the one that streams (one time step per call).

Only the head's tensors are read from the checkpoint (``load_checkpoint(path, "head")``); the device
never builds the tail. Images come in and spikes go out as numpy arrays, as from the ONNX runtime
(device/onnx_head_engine.py), so that everything after the head is the same for both.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch

from spikebottlenet.shared.activity_monitor import ActivityMonitor
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import CheckpointInfo
from spikebottlenet.shared.energy import CountMode, EnergyEstimate
from spikebottlenet.shared.neuron import StepState
from spikebottlenet.shared.split_model import SplitHead


class TorchHead:
    """A split checkpoint's head as a torch module, with ActivityMonitor counting the spikes it fires."""

    runtime = "torch"

    def __init__(self, module: SplitHead, checkpoint: CheckpointInfo, energy_mode: CountMode | str) -> None:
        self.module = module.eval()  # images [B, 3, H, W] -> spikes [T, B, C', H', W']
        self.checkpoint = checkpoint
        self.energy_mode = CountMode(energy_mode)
        # The activity monitor hooks the shared head module for the length of one forward; two
        # overlapping forwards would each record the other's layers, so forwards take turns.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike, energy_mode: CountMode | str) -> TorchHead:
        loaded = load_checkpoint(path, "head")
        return cls(loaded.model, loaded.checkpoint, energy_mode)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[EnergyEstimate]]:
        """Normalized images [B, 3, H, W] float32 -> their spikes [T, B, C', H', W'] bool and one energy estimate per
        image, each from that image's own spikes (a batch's images do not interact: tdBN runs on its running stats)."""
        monitor = ActivityMonitor(self.module, self.checkpoint.config.time_steps, self.energy_mode)
        with self._lock, torch.inference_mode(), monitor:
            spikes = self.module(torch.from_numpy(x))
        return spikes.numpy(), monitor.estimates()

    def start_stream(self) -> StepState:
        """The state of a new stream: every neuron at rest."""
        return StepState()

    def forward_step(self, x: np.ndarray, state: StepState) -> tuple[np.ndarray, EnergyEstimate]:
        """``forward`` one time step at a time: one image [1, 3, H, W] -> its next step's spikes [1, 1, C', H', W']
        and that step's energy, the head's neurons continuing from ``state``."""
        monitor = ActivityMonitor(self.module, 1, self.energy_mode)
        with self._lock, torch.inference_mode(), monitor:
            spikes = self.module.step(torch.from_numpy(x), state)
        return spikes.numpy(), monitor.estimates()[0]
