"""The edge half: check a spike frame against the loaded tail, unpack it, run decoder + tail.

Two steps, so that frames can be batched between them (edge/micro_batcher.py):

    decode(frame)   check every field, unpack the payload -> spikes [T, B, C', H', W']  (any thread)
    infer(spikes)   decoder + tail -> logits [B, num_classes]                         (the inference worker)

Only the tail's tensors are read from the checkpoint (``load_checkpoint(path, "tail")``); the
edge never builds the head. The decoder and tail run on the CPU or a GPU (``device``), in float32 or under
bfloat16 autocast (``precision``); on a GPU a raw or sparse payload crosses as its packed bytes and is
unpacked there, and the logits come back to the CPU as float32.

Every field of a frame is checked before anything is allocated for it, so a malformed or hostile frame costs a
few comparisons and an exception, never the process.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter

import grpc
import torch

from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import CheckpointError, CheckpointInfo
from spikebottlenet.shared.codec import Codec, SpikeCodecError, max_payload_length
from spikebottlenet.shared.entropy_codec import PreviousStep
from spikebottlenet.shared.errors import ConfigError, SpikeBottleNetError
from spikebottlenet.shared.fec import FecError, check_parity, protected_length, recover
from spikebottlenet.shared.neuron import StepState
from spikebottlenet.shared.rpc.wire import CODEC_FROM_WIRE, MAX_REQUEST_ID_LENGTH
from spikebottlenet.shared.spike_tensors import decode_received
from spikebottlenet.shared.split_model import SplitTail
from spikebottlenet.shared.torch_runtime import inference_device
from spikebottlenet.v1 import split_inference_pb2 as pb


class FrameError(SpikeBottleNetError, ValueError):
    """A frame this edge will not run; the message says why, for the device's operator, and ``status`` is what the
    call ends with."""

    status: grpc.StatusCode


class InvalidFrame(FrameError):
    """Malformed: split point, shape, codec or payload do not fit this edge's model."""

    status = grpc.StatusCode.INVALID_ARGUMENT  # this frame is malformed


class FingerprintMismatch(FrameError):
    """Well-formed, but the head that made it ran a different checkpoint than this tail."""

    # the deployment pairs two different models: retrying cannot help, the checkpoints must be fixed
    status = grpc.StatusCode.FAILED_PRECONDITION


def not_served(fingerprint: str, runners: Sequence[TailRunner]) -> FingerprintMismatch:
    """The refusal of a frame from a model that none of ``runners`` (an edge's models) is."""
    served = "; ".join(f"{r.fingerprint} ({r.checkpoint.config.backbone.arch} {r.split_point.name})" for r in runners)
    return FingerprintMismatch(
        f"frame comes from model {fingerprint or '(no fingerprint)'}, which this edge does "
        f"not serve; it serves {served}; device and edge must load the same checkpoint"
    )


@dataclass(frozen=True)
class DecodedFrame:
    spikes: torch.Tensor  # [T, B, C', H', W'] bool, on the runner's device
    decode_ms: float  # payload -> spike tensor
    damage: pb.LinkDamage  # what the link did that the edge could see: FEC repairs, erased chunks

    @property
    def images(self) -> int:
        return self.spikes.shape[1]


@dataclass(frozen=True)
class TailResult:
    logits: torch.Tensor  # [B, num_classes] float32
    decode_ms: float  # payload -> spike tensor
    inference_ms: float  # decoder + tail


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # the autocast dtype of each precision setting


class TailRunner:
    """Runs frames through one checkpoint's tail. Thread-safe: the tail has no state between calls."""

    def __init__(
        self,
        tail: SplitTail,
        checkpoint: CheckpointInfo,
        max_batch: int,
        device: torch.device = torch.device("cpu"),
        precision: str = "fp32",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if checkpoint.config.bottleneck is None:
            raise CheckpointError("a tail is only built from a split checkpoint; this one has no bottleneck")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.device = device
        self.autocast_dtype = PRECISIONS[precision]
        self.tail = tail.eval().to(device)
        self.checkpoint = checkpoint
        self.max_batch = max_batch
        self.split_point = checkpoint.config.split_point  # SplitPoint: index, name, block output shape
        self.spike_shape = checkpoint.config.spike_shape  # (T, C', H', W') of one image
        self.spike_model = checkpoint.config.spike_model()  # the entropy codec's; None: not fitted
        self.inference_ms = 0.0  # one image's decoder + tail, measured by warm_up (0: not measured)
        # Whole frames (the inference worker) and streamed steps (their gRPC threads) take turns on the tail: a
        # step switches its neurons to single-step for the length of the call
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        max_batch: int,
        device: torch.device = torch.device("cpu"),
        precision: str = "fp32",
    ) -> TailRunner:
        loaded = load_checkpoint(path, "tail")
        return cls(loaded.model, loaded.checkpoint, max_batch, device, precision)

    @property
    def fingerprint(self) -> str:
        return self.checkpoint.fingerprint

    def model_info(self) -> pb.ModelInfo:
        backbone = self.checkpoint.config.backbone
        return pb.ModelInfo(
            model_fingerprint=self.fingerprint,
            split_point=self.split_point.index,
            spike_shape=self.spike_shape,
            num_classes=backbone.num_classes,
            trained=self.checkpoint.trained,
            arch=backbone.arch,
            split_point_name=self.split_point.name,
            inference_ms=self.inference_ms,
        )

    def check(self, frame: pb.SpikeFrame | pb.SpikeStep) -> tuple[tuple[int, ...], Codec]:
        """The frame's shape and codec if this tail can run it; raises FrameError naming the problem."""
        if len(frame.request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidFrame(
                f"request_id is {len(frame.request_id)} characters long; at most {MAX_REQUEST_ID_LENGTH} are accepted"
            )
        if frame.model_fingerprint != self.fingerprint:
            raise FingerprintMismatch(
                f"frame comes from model {frame.model_fingerprint or '(no fingerprint)'} but this edge serves "
                f"model {self.fingerprint}; device and edge must load the same checkpoint"
            )
        if frame.split_point != self.split_point.index:
            raise InvalidFrame(
                f"frame is split at split point {frame.split_point}, this edge's tail starts after "
                f"split point {self.split_point.index} ({self.split_point.name})"
            )
        shape = tuple(frame.shape)
        if len(shape) != 5:
            raise InvalidFrame(f"shape must have 5 entries (T, B, C', H', W'), got {list(shape)}")
        t, b, c, h, w = shape
        if (t, c, h, w) != self.spike_shape:
            expected = ", ".join(map(str, (self.spike_shape[0], "B", *self.spike_shape[1:])))
            raise InvalidFrame(
                f"shape {list(shape)} does not match this model's spikes (T, B, C', H', W') = ({expected})"
            )
        if not 1 <= b <= self.max_batch:
            raise InvalidFrame(f"batch size {b} in shape {list(shape)} is outside 1..{self.max_batch}")
        codec = self.codec_of(frame)
        try:
            check_parity(frame.fec_parity_bytes)
        except FecError as e:
            raise InvalidFrame(str(e)) from None
        return shape, codec

    def codec_of(self, message: pb.SpikeFrame | pb.SpikeStep) -> Codec:
        """The codec a frame, or one streamed step, names, if this tail can decode it; raises InvalidFrame."""
        if message.codec == pb.CODEC_UNSPECIFIED:
            raise InvalidFrame("codec is unspecified; set CODEC_RAW, CODEC_SPARSE or CODEC_ENTROPY")
        if message.codec not in CODEC_FROM_WIRE:
            raise InvalidFrame(
                f"unknown codec {message.codec}; this edge reads CODEC_RAW (1), CODEC_SPARSE (2) and CODEC_ENTROPY (3)"
            )
        codec = CODEC_FROM_WIRE[message.codec]
        if codec is Codec.ENTROPY and self.spike_model is None:
            raise InvalidFrame("an entropy-coded frame, but this model has no entropy model to decode it with")
        return codec

    def decode(self, frame: pb.SpikeFrame) -> DecodedFrame:
        """The frame's spikes, repaired by its Reed–Solomon parity if it has any, an entropy payload's chunks that
        fail their CRC erased (run as silence); raises FrameError naming what does not fit this tail, and for a
        frame with nothing intact."""
        shape, codec = self.check(frame)
        return self.decode_payload(frame.payload, shape, codec, frame.fec_parity_bytes, frame.lost_bytes)

    def decode_payload(
        self,
        payload: bytes,
        shape: tuple[int, ...],
        codec: Codec,
        fec_parity_bytes: int,
        lost: Collection[int] = (),
        previous: PreviousStep | None = None,
    ) -> DecodedFrame:
        """``decode`` for a payload whose frame fields ``check`` has passed: a whole frame's, or one streamed
        step's (``shape`` [1, B, C', H', W'], ``previous`` the step before as received, for an entropy payload);
        ``lost``: the positions the link reports lost, erasures for the Reed–Solomon decoder."""
        # Before the Reed–Solomon decoder (pure Python) works on it: no longer than a sender makes it. Without
        # parity the codecs bound their own work (raw: its exact length; sparse, entropy: what the shape allows)
        longest = protected_length(max_payload_length(shape, codec), fec_parity_bytes)
        if fec_parity_bytes and len(payload) > longest:
            raise InvalidFrame(
                f"payload of {len(payload)} bytes is longer than any {codec.value} payload of shape "
                f"{list(shape)} with {fec_parity_bytes} parity bytes per block ({longest})"
            )
        start = perf_counter()
        try:
            repaired = recover(payload, fec_parity_bytes, lost)
            # bools, as the encoder's LIF emitted them: the decoder takes them as they are
            received = decode_received(
                repaired.payload,
                shape,
                codec,
                dtype=torch.bool,
                model=self.spike_model,
                previous=previous,
                device=self.device,
            )
        except (FecError, SpikeCodecError) as e:
            raise InvalidFrame(f"payload does not decode: {e}") from None
        if received.erased_chunks == received.chunks:
            raise InvalidFrame(
                f"payload does not decode: corrupt entropy payload: all {received.chunks} of its chunks "
                f"fail the check the encoder recorded (a damaged, truncated or foreign payload)"
            )
        damage = pb.LinkDamage(
            fec_corrected_bytes=repaired.corrected_bytes,
            fec_failed_blocks=repaired.failed_blocks,
            chunks=received.chunks,
            erased_chunks=received.erased_chunks,
            erased_chunk_indices=received.erased,
        )
        return DecodedFrame(received.spikes, (perf_counter() - start) * 1e3, damage)

    def warm_up(self, timed_runs: int = 5) -> None:
        """Forwards on silent spikes: the first so that the first frame does not pay for one-time set-up (see
        HeadRunner.warm_up), then ``timed_runs`` more for the median time of one image, which GetModelInfo
        reports for the devices' split-point planners."""
        spikes = torch.zeros(self.spike_shape[0], 1, *self.spike_shape[1:], dtype=torch.bool)  # [T, 1, C', H', W']
        self.infer(spikes)
        self.step(spikes[:1], StepState())  # and a streamed step's path
        times = []
        for _ in range(timed_runs):
            start = perf_counter()
            self.infer(spikes)
            times.append((perf_counter() - start) * 1e3)
        self.inference_ms = statistics.median(times)

    def infer(self, spikes: torch.Tensor) -> torch.Tensor:
        """Spikes [T, B, C', H', W'] -> logits [B, num_classes] (float32, on the CPU). Each image's row depends only
        on that image (tdBN runs on its running statistics), so frames can be concatenated along B and split after."""
        with self._lock, self._running():
            return self.tail(spikes.to(self.device)).float().cpu()

    def infer_together(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Several frames' spikes [T, B_i, C', H', W'] through the tail as one batch: each frame's own logits
        [B_i, num_classes]."""
        spikes = frames[0] if len(frames) == 1 else torch.cat(list(frames), dim=1)  # [T, sum B_i, C', H', W']
        return list(self.infer(spikes).split([f.shape[1] for f in frames]))

    def step(self, spikes: torch.Tensor, state: StepState) -> torch.Tensor:
        """One streamed time step: spikes [1, B, C', H', W'] -> the running logits [B, num_classes], the tail's
        neurons continuing from ``state`` (the stream's own) and leaving it for the next step."""
        with self._lock, self._running():
            return self.tail.step(spikes.to(self.device), state).float().cpu()

    @contextmanager
    def _running(self) -> Iterator[None]:
        """Inference mode, under autocast to the precision's dtype if it has one."""
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None),
        ):
            yield

    def run(self, frame: pb.SpikeFrame) -> TailResult:
        """One frame on its own: decode, then infer."""
        decoded = self.decode(frame)
        start = perf_counter()
        logits = self.infer(decoded.spikes)
        return TailResult(logits, decoded.decode_ms, (perf_counter() - start) * 1e3)


def load_tails(
    paths: Sequence[str | os.PathLike], max_batch: int, device: str = "cpu", precision: str = "fp32"
) -> list[TailRunner]:
    """The tails of an edge's checkpoints on ``device``, each model once; raises CheckpointError naming a checkpoint
    that does not load (or one without a bottleneck to split at), ConfigError for a model given twice or a device
    this machine does not have."""
    on = inference_device(device)  # before any checkpoint is read: a missing GPU is the one line to say
    runners = [TailRunner.load(path, max_batch, on, precision) for path in paths]
    fingerprints = [runner.fingerprint for runner in runners]
    if len(set(fingerprints)) < len(fingerprints):
        raise ConfigError("the same model is given twice (its checkpoints have the same fingerprint): serve each once")
    return runners
