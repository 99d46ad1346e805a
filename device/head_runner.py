"""The device half: image bytes -> head spikes -> a spike frame for the edge, with the head's energy.

What runs the head is a ``HeadEngine``: torch (device/torch_head.py, the default, which streams) or
onnxruntime (device/onnx_head_engine.py, no torch needed). Images go in and spikes come out as numpy
arrays, so preprocessing, packing, energy and answers are the same code for both. ``sbn predict``
runs the same steps on the head of a full model, so the monolithic path and the split path measure
and pack spikes identically.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from spikebottlenet.shared.checkpoint_metadata import CheckpointError, CheckpointInfo
from spikebottlenet.shared.codec import CODEC_CHOICES, Codec, encode
from spikebottlenet.shared.energy import CountMode, EnergyEstimate
from spikebottlenet.shared.entropy_codec import PreviousStep, chunk_layout
from spikebottlenet.shared.errors import ConfigError
from spikebottlenet.shared.fec import check_parity, protect
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import MAX_DECODED_BYTES, load_image
from spikebottlenet.shared.rpc.wire import CODEC_TO_WIRE
from spikebottlenet.shared.uncertainty import InputTraits
from spikebottlenet.v1 import split_inference_pb2 as pb

Runtime = Literal["torch", "onnx"]


@runtime_checkable
class HeadEngine(Protocol):
    """What runs a split checkpoint's head (and encoder) on a batch of images."""

    runtime: str  # "torch", "onnx"
    checkpoint: CheckpointInfo  # the model it is the head of

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[EnergyEstimate]]:
        """Normalized images [B, 3, H, W] float32 -> spikes [T, B, C', H', W'] bool, one energy estimate per image."""
        ...


@runtime_checkable
class StreamingHeadEngine(HeadEngine, Protocol):
    """A head that can also run one time step per call, its neurons' state carried between calls (streaming)."""

    def start_stream(self) -> Any:
        """The state of a new stream, every neuron at rest."""
        ...

    def forward_step(self, x: np.ndarray, state: Any) -> tuple[np.ndarray, EnergyEstimate]:
        """One image [1, 3, H, W] -> its next step's spikes [1, 1, C', H', W'] bool and that step's energy."""
        ...


class StreamingUnsupported(ConfigError):
    """A stream (stream=, early_exit=) asked of a head whose runtime computes all time steps in one call."""


def load_head_engine(
    path: str | os.PathLike,
    runtime: Runtime = "torch",
    energy_mode: CountMode | str = CountMode.PAPER,
    threads: int = 1,
) -> HeadEngine:
    """The head of checkpoint ``path`` (runtime onnx: a head exported by ``sbn export onnx``), ready to run. Each
    runtime is imported only when asked for: a device without torch runs onnx."""
    if runtime == "onnx":
        from .onnx_head_engine import OnnxHead

        return OnnxHead.load(path, energy_mode, threads)
    from .torch_head import TorchHead

    return TorchHead.load(path, energy_mode)


@dataclass(frozen=True)
class ModelInput:
    """One upload, decoded and preprocessed: what a head runs. Made off the head's thread (device/decoder.py), so
    that no decode ever holds the head."""

    x: np.ndarray  # the normalized image [3, H, W] float32
    image_bytes: int  # size of the uploaded image file, as received

    @classmethod
    def load(cls, image: bytes, config: ModelConfig, max_decoded_bytes: int = MAX_DECODED_BYTES) -> ModelInput:
        """Raises shared.preprocess.ImageError (ImageTooLarge: over ``max_decoded_bytes``) if ``image`` is not a
        readable image."""
        return cls(load_image(image, config, max_decoded_bytes), len(image))


@dataclass(frozen=True)
class ImageSpikes:
    """One image's part of a head run: its spikes, the frame they travel in (which may carry other images' too) and
    what they cost."""

    frame: pb.SpikeFrame  # ready to send
    codec: Codec  # the codec that packed frame.payload ("auto" resolved)
    spikes: np.ndarray  # [T, 1, C', H', W'] bool
    energy: EnergyEstimate  # of this image on the device
    image_bytes: int  # size of the uploaded image file, as received
    traits: InputTraits  # of the model input, for the uncertainty rules (shared/uncertainty.py)


class ImageStream:
    """One image through a head one time step per ``step()`` (streaming): each step's spikes packed on their own
    into a SpikeStep, the head's neurons carrying their state from one step to the next in this stream's
    StepState. The first message names the frame, the later ones only their step."""

    def __init__(
        self, head: HeadRunner, engine: StreamingHeadEngine, x: np.ndarray, image_bytes: int, traits: InputTraits
    ) -> None:
        self.head, self.engine, self.x = head, engine, x  # x: the normalized image [1, 3, H, W]
        self.image_bytes, self.traits = image_bytes, traits
        self.state = engine.start_stream()
        self.request_id = uuid.uuid4().hex
        self.spikes: list[np.ndarray] = []  # each computed step's [1, 1, C', H', W']
        self.energy: list[EnergyEstimate] = []  # each computed step's
        self.codecs: list[Codec] = []  # the codec that packed each computed step

    @property
    def time_steps(self) -> int:
        return self.head.checkpoint.config.time_steps

    def step(self, fresh: frozenset[int] = frozenset()) -> pb.SpikeStep:
        """Compute the next time step and pack it; the first of T calls returns the message naming the frame.
        ``fresh``: entropy chunks to code without the step before, those the edge reported erased (``ChunkResets``
        in device/streaming.py)."""
        head, t = self.head, len(self.spikes)
        if t >= self.time_steps:
            raise RuntimeError(f"all {self.time_steps} time steps of this stream have been computed")
        spikes, energy = self.engine.forward_step(self.x, self.state)  # [1, 1, C', H', W']
        previous = None if t == 0 else PreviousStep(self.spikes[-1].view(np.uint8), fresh)
        codec, payload = encode(
            spikes,
            head.codec,
            assume_binary=True,
            model=head.spike_model,
            chunks=head.entropy_chunks,
            previous=previous,
        )
        self.spikes.append(spikes)
        self.energy.append(energy)
        self.codecs.append(codec)
        message = pb.SpikeStep(step=t, codec=CODEC_TO_WIRE[codec], payload=protect(payload, head.fec_parity_bytes))
        if previous is not None and codec is Codec.ENTROPY:
            message.fresh_chunks[:] = sorted(fresh)
        if t == 0:
            message.request_id, message.model_fingerprint = self.request_id, head.checkpoint.fingerprint
            message.split_point, message.fec_parity_bytes = head.split_point.index, head.fec_parity_bytes
            message.shape[:] = [self.time_steps, *spikes.shape[1:]]
        return message

    def output(self, messages: list[pb.SpikeStep], computed: int) -> ImageSpikes:
        """This image's spikes as far as the stream went: the first ``computed`` steps computed (their energy, all of
        it spent) and the ``messages`` sent; its frame stands for what crossed the link, their payloads together.
        Its codec is the first step's (under "auto" later steps may differ)."""
        frame = pb.SpikeFrame(
            request_id=self.request_id,
            model_fingerprint=self.head.checkpoint.fingerprint,
            split_point=self.head.split_point.index,
            shape=[len(messages), *self.spikes[0].shape[1:]],
            codec=messages[0].codec,
            payload=b"".join(m.payload for m in messages),
            fec_parity_bytes=self.head.fec_parity_bytes,
        )
        return ImageSpikes(
            frame,
            self.codecs[0],
            np.concatenate(self.spikes[: len(messages)]),
            EnergyEstimate.over_steps(self.energy[:computed]),
            self.image_bytes,
            self.traits,
        )


@dataclass(frozen=True)
class RunTimings:
    """Milliseconds of one head run, which may carry the images of several requests (decoded before it)."""

    head_ms: float  # one forward of the head and encoder over all of them
    encode_ms: float  # packing the spikes, one frame per job

    @property
    def total_ms(self) -> float:
        return self.head_ms + self.encode_ms


@dataclass(frozen=True)
class JobResult:
    """One job's result (a job: one request's images, device/head_queue.py): one frame for its images."""

    images: dict[int, ImageSpikes]  # the job's image index -> that image's slice of the frame
    frame: pb.SpikeFrame  # T x B x C' x H' x W': a row for each of ``images``, in their order
    timings: RunTimings  # of the run that carried the job
    run_images: int  # images in that run's head forward (micro-batching: several jobs may share it)
    queue_ms: float = 0.0  # how long the job waited for that run (HeadQueue); 0: run at once


class HeadRunner:
    """One model's head, the device's half of the split model: runs uploaded images through it and packs the
    spikes."""

    def __init__(
        self, engine: HeadEngine, codec: str = "raw", entropy_chunks: int = 1, fec_parity_bytes: int = 0
    ) -> None:
        """``entropy_chunks``: independently decodable chunks of an entropy payload (shared/entropy_codec.py);
        ``fec_parity_bytes``: Reed–Solomon parity per 255-byte block around every payload (shared/fec.py), 0: none.
        Raises a SpikeBottleNetError (a ValueError) for settings this checkpoint's frames cannot take."""
        if codec not in CODEC_CHOICES:
            raise ConfigError(f"unknown codec {codec!r}; expected one of {', '.join(CODEC_CHOICES)}")
        checkpoint = engine.checkpoint
        if checkpoint.config.bottleneck is None:
            raise CheckpointError("a head is only built from a split checkpoint; this one has no bottleneck")
        self.engine = engine  # images [B, 3, H, W] -> spikes [T, B, C', H', W']
        self.checkpoint = checkpoint
        self.split_point = checkpoint.config.split_point  # SplitPoint: index, name, block output shape
        self.spike_model = checkpoint.config.spike_model()  # the entropy codec's; None: not fitted
        if codec == Codec.ENTROPY and self.spike_model is None:
            raise CheckpointError(
                "the entropy codec needs a checkpoint with an entropy model (sbn train fit-codec "
                "adds one); this one has none"
            )
        if self.spike_model is not None:  # ValueError naming the counts these frames can be cut into
            chunk_layout(self.spike_model.channels, checkpoint.config.spike_shape[2], entropy_chunks)
        check_parity(fec_parity_bytes)  # ValueError naming the range
        self.codec = codec
        self.entropy_chunks = entropy_chunks
        self.fec_parity_bytes = fec_parity_bytes

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        codec: str = "raw",
        energy_mode: CountMode | str = CountMode.PAPER,
        entropy_chunks: int = 1,
        fec_parity_bytes: int = 0,
        runtime: Runtime = "torch",
        threads: int = 1,
    ) -> HeadRunner:
        return cls(load_head_engine(path, runtime, energy_mode, threads), codec, entropy_chunks, fec_parity_bytes)

    def streaming_engine(self) -> StreamingHeadEngine:
        """The engine, if it runs one time step per call (streaming, early exit); else StreamingUnsupported, a 422."""
        if not isinstance(self.engine, StreamingHeadEngine):
            raise StreamingUnsupported(
                f"streaming (stream=, early_exit=) needs the torch runtime; this device runs its heads on "
                f"{self.engine.runtime}, which computes all time steps in one call"
            )
        return self.engine

    def warm_up(self) -> None:
        """One forward on a blank image, so that the first request does not pay for one-time set-up (the
        allocator's first blocks, the fused LIF's compilation): ~1 s that would otherwise eat its deadline."""
        size = self.checkpoint.config.backbone.image_size
        blank = np.zeros((1, 3, size, size), np.float32)
        self.engine.forward(blank)
        if isinstance(self.engine, StreamingHeadEngine):
            self.engine.forward_step(blank, self.engine.start_stream())  # and a streamed step's path

    def run(self, image: bytes) -> ImageSpikes:
        """One image in its own frame; raises shared.preprocess.ImageError if it is not a readable image."""
        (job,) = self.run_jobs([{0: ModelInput.load(image, self.checkpoint.config)}])
        return job.images[0]

    def run_jobs(self, jobs: list[dict[int, ModelInput]]) -> list[JobResult]:
        """Several jobs' images (each job's by its own image index, at least one) through the head as one batch,
        then one frame per job.

        Every image of every job goes into one forward [sum B, 3, H, W] -> [T, sum B, C', H', W']; each job's
        frame then carries only its own images' spikes, so a job's frame, energy and bytes are what it would get
        alone.
        """
        start = perf_counter()
        x = np.stack([model_input.x for inputs in jobs for model_input in inputs.values()])  # [B, 3, H, W]
        spikes, energy = self.engine.forward(x)  # [T, B, C', H', W'], B estimates
        traits = InputTraits.of(x, self.checkpoint.config)
        forwarded = perf_counter()
        packed = []
        first = 0  # the job's first row of the batch: stacked in job order
        for inputs in jobs:
            rows = range(first, first + len(inputs))
            codec, frame = self.pack(spikes[:, rows.start : rows.stop])
            images = {
                index: ImageSpikes(frame, codec, spikes[:, b : b + 1], energy[b], model_input.image_bytes, traits[b])
                for b, (index, model_input) in zip(rows, inputs.items(), strict=True)
            }
            packed.append((images, frame))
            first = rows.stop
        timings = RunTimings((forwarded - start) * 1e3, (perf_counter() - forwarded) * 1e3)
        return [JobResult(images, frame, timings, len(x)) for images, frame in packed]

    def open_stream(self, image: bytes | ModelInput) -> ImageStream:
        """The image, read and preprocessed (unless it already is), ready to run through the head one time step at
        a time; raises ImageError if it is not a readable image, StreamingUnsupported if this head's runtime does not
        stream."""
        engine = self.streaming_engine()
        if isinstance(image, bytes):
            image = ModelInput.load(image, self.checkpoint.config)
        x = image.x[np.newaxis]  # [1, 3, H, W]
        traits = InputTraits.of(x, self.checkpoint.config)[0]
        return ImageStream(self, engine, x, image.image_bytes, traits)

    def pack(self, spikes: np.ndarray) -> tuple[Codec, pb.SpikeFrame]:
        """Spikes [T, B, C', H', W'] -> the codec that packed them ("auto" resolved) and the frame for the edge."""
        # the encoder's LIF made them: binary by construction, so the codec skips its check
        codec, payload = encode(
            spikes, self.codec, assume_binary=True, model=self.spike_model, chunks=self.entropy_chunks
        )
        frame = pb.SpikeFrame(
            request_id=uuid.uuid4().hex,
            model_fingerprint=self.checkpoint.fingerprint,
            split_point=self.split_point.index,
            shape=spikes.shape,
            codec=CODEC_TO_WIRE[codec],
            payload=protect(payload, self.fec_parity_bytes),
            fec_parity_bytes=self.fec_parity_bytes,
        )
        return codec, frame
