"""The device half: image bytes -> head spikes -> a spike frame for the edge, with the head's energy.

Only the head's tensors are read from the checkpoint (``load_checkpoint(path, "head")``); the
device never builds the tail. ``sbn predict`` runs the same steps on the head of a full model,
so the monolithic path and the split path measure and pack spikes identically.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from time import perf_counter

import torch
from torch import nn

from shared.checkpoint import CheckpointInfo, load_checkpoint
from shared.codec import CODEC_CHOICES, Codec, encode
from shared.energy import ActivityMonitor, CountMode, EnergyEstimate
from shared.preprocess import load_image, unnormalize
from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb
from shared.rpc.wire import CODEC_TO_WIRE
from shared.uncertainty import ink, is_blank


@dataclass(frozen=True)
class HeadOutput:
    frame: pb.SpikeFrame  # ready to send
    codec: Codec  # the codec that packed frame.payload ("auto" resolved)
    spikes: torch.Tensor  # [T, 1, C', H', W'] binary
    energy: EnergyEstimate  # of this image on the device
    elapsed_ms: float  # decode + preprocess, head, encode
    image_bytes: int  # size of the uploaded image file, as received
    blank: bool  # the model input was one flat value: nothing to classify (shared/uncertainty.py)
    ink: float  # mean brightness of the model input, 0..1 (shared/uncertainty.py)


class HeadRunner:
    """Runs uploaded images through one checkpoint's head and packs the spikes."""

    def __init__(self, head: nn.Module, checkpoint: CheckpointInfo, codec: str = "raw",
                 energy_mode: CountMode | str = CountMode.PAPER) -> None:
        if codec not in CODEC_CHOICES:
            raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODEC_CHOICES)}")
        assert checkpoint.config.bottleneck is not None, "a head is only built from a split checkpoint"
        self.head = head.eval()
        self.checkpoint = checkpoint
        self.split_point = checkpoint.config.split_point  # SplitPoint: index, name, block output shape
        self.codec = codec
        self.energy_mode = CountMode(energy_mode)
        # The activity monitor hooks the shared head module for the length of one forward; two
        # overlapping forwards would each record the other's layers, so forwards take turns.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike, codec: str = "raw",
             energy_mode: CountMode | str = CountMode.PAPER) -> HeadRunner:
        loaded = load_checkpoint(path, "head")
        return cls(loaded.model, loaded.checkpoint, codec, energy_mode)

    def run(self, image: bytes) -> HeadOutput:
        """Raises shared.preprocess.ImageError if ``image`` is not a readable image."""
        start = perf_counter()
        x = load_image(image, self.checkpoint.config).unsqueeze(0)  # [1, 3, H, W]
        spikes, energy = self.forward(x)
        codec, frame = self.pack(spikes)
        elapsed_ms = (perf_counter() - start) * 1e3
        return HeadOutput(frame, codec, spikes, energy[0], elapsed_ms, len(image), bool(is_blank(x)[0]),
                          float(ink(unnormalize(x, self.checkpoint.config))[0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[EnergyEstimate]]:
        """Normalized images [B, 3, H, W] -> their spikes [T, B, C', H', W'] and one energy estimate per image,
        each from that image's own spikes (a batch's images do not interact: tdBN runs on its running stats)."""
        monitor = ActivityMonitor(self.head, self.checkpoint.config.time_steps, self.energy_mode)
        with self._lock, torch.inference_mode(), monitor:
            spikes = self.head(x)
        return spikes, monitor.estimates()

    def pack(self, spikes: torch.Tensor) -> tuple[Codec, pb.SpikeFrame]:
        """Spikes [T, B, C', H', W'] -> the codec that packed them ("auto" resolved) and the frame for the edge."""
        codec, payload = encode(spikes, self.codec)
        frame = pb.SpikeFrame(request_id=uuid.uuid4().hex, model_fingerprint=self.checkpoint.fingerprint,
                              split_point=self.split_point.index, shape=spikes.shape, codec=CODEC_TO_WIRE[codec],
                              payload=payload)
        return codec, frame
