"""The classification result: the body of ``POST /classify``, of each entry of ``POST /classify/batch`` and the
output of ``sbn predict``.

Every path measures one ImageResult per image (the logits, the head's output, the checkpoint, the
timings, the bytes it is charged, ...), and ``Classification.build`` makes the body from it, so the
split and the monolithic answer can only differ where the numbers differ.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from spikebottlenet.shared.checkpoint_metadata import CheckpointInfo
from spikebottlenet.shared.codec import Codec, encode
from spikebottlenet.shared.uncertainty import is_uncertain, max_softmax, softmax
from spikebottlenet.v1 import split_inference_pb2 as pb

from .head_runner import ImageSpikes

TOP_K = 5
UNTRAINED_NOTE = "untrained placeholder weights: predictions are meaningless"
UNVERIFIED_NOTE = (
    "the checkpoint's info (trained flag, accuracies, uncertainty threshold) does not match its digest: "
    "edited or from an older file, so the model is treated as untrained and no answer as confident"
)


class ClassProbability(BaseModel):
    label: str
    probability: float


class Energy(BaseModel):
    """Estimated energy of this image's head on the device, from its measured spikes (paper Eq. 7-8)."""

    device_45nm_mj: float = Field(description="spiking head on 45 nm CMOS (0.9 pJ per synaptic op), mJ")
    device_rolls_mj: float = Field(description="spiking head on the ROLLS neuromorphic chip (77 fJ per op), mJ")
    ann_baseline_45nm_mj: float = Field(description="the same layers as a conventional ANN (4.6 pJ per MAC), mJ")
    syops: float = Field(description="synaptic operations: accumulates actually triggered by spikes")
    firing_rate: float = Field(description="spikes per neuron per time step over the counted layers' inputs")
    transmit_mj: float | None = Field(
        default=None,
        description="the radio's energy to send this image's frame on the device's configured link "
        "(SBN_DEVICE_LINK: its rate and power, shared/radio.py): P(rate) x bytes / rate, "
        "mJ. A measured rate says little about the radio behind it (loopback, a LAN), so "
        "only split_point=auto's prediction uses the measured link",
    )
    device_total_mj: float | None = Field(
        default=None, description="what the device pays for this image: device_45nm_mj + transmit_mj, mJ"
    )


class SplitChoice(BaseModel):
    """How ``split_point=auto`` chose this answer's split point (device/planner.py)."""

    objective: str = Field(description="latency, energy or mix")
    link: str = Field(description="the link profile the estimate is based on")
    link_measured: bool = Field(description="rate and round trip measured from recent replies, else the profile's")
    link_rate_mbps: float
    link_rtt_ms: float
    candidates: int = Field(
        description="split points considered: held here, served by the edge, within the accuracy-drop budget"
    )
    predicted_latency_ms: float = Field(description="the planner's estimate for the chosen split point")
    predicted_energy_mj: float = Field(description="the planner's estimate: device compute + radio")


class LinkDamage(BaseModel):
    """What the link did to the frame that carried this image, as the edge saw it (split path only)."""

    fec_parity_bytes: int = Field(
        description="Reed-Solomon parity bytes per 255-byte block the frame carried "
        "(SBN_DEVICE_FEC_PARITY_BYTES; 0: none)"
    )
    fec_corrected_bytes: int = Field(description="bytes (payload or parity) the Reed-Solomon decoder put right")
    fec_failed_blocks: int = Field(description="parity blocks with more damage than they correct")
    chunks: int = Field(description="independently decodable chunks of the payload (entropy codec; else 1)")
    erased_chunks: int = Field(description="chunks that failed their CRC: their spikes ran as silence")

    @classmethod
    def of(cls, frame: pb.SpikeFrame, damage: pb.LinkDamage) -> LinkDamage:
        return cls(
            fec_parity_bytes=frame.fec_parity_bytes,
            fec_corrected_bytes=damage.fec_corrected_bytes,
            fec_failed_blocks=damage.fec_failed_blocks,
            chunks=damage.chunks,
            erased_chunks=damage.erased_chunks,
        )

    @classmethod
    def total(cls, parts: list[LinkDamage]) -> LinkDamage:
        """A streamed frame's damage: its steps' added up."""
        return cls(
            fec_parity_bytes=parts[0].fec_parity_bytes,
            **{
                name: sum(getattr(p, name) for p in parts)
                for name in ("fec_corrected_bytes", "fec_failed_blocks", "chunks", "erased_chunks")
            },
        )


class Latency(BaseModel):
    """Milliseconds; ``queue``, ``edge`` and ``network`` only on the split path."""

    device: float = Field(
        description="image decode and preprocessing, head and spike encoding (of the head run that "
        "carried this image, which concurrent requests may share)"
    )
    queue: float | None = Field(default=None, description="waiting for the device's head (micro-batching)")
    edge: float | None = Field(default=None, description="the edge's own time: payload decode, decoder and tail")
    network: float | None = Field(default=None, description="gRPC round trip minus the edge's time")
    total: float = Field(description="the whole classification, from image bytes in hand to result")


class ModelSummary(BaseModel):
    fingerprint: str = Field(description="sha256 of the checkpoint's config and weights; the edge checks it")
    trained: bool
    note: str | None = None


class SpikeRaster(BaseModel):
    """The transmitted binary spike tensor of this image (``?spikes=true``), one bit per spike."""

    shape: list[int] = Field(description="T, C', H', W' (the response's spike_shape)")
    bits: str = Field(
        description="base64 of numpy.packbits of the tensor flattened in C order: spike i is bit 7 - i % 8 of byte "
        "i // 8 (most significant first), the last byte zero-padded; ceil(T*C'*H'*W' / 8) bytes"
    )


def even_shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` whole numbers that add up to it, the first ``total % parts`` one larger."""
    share, extra = divmod(total, parts)
    return [share + (i < extra) for i in range(parts)]


@dataclass(frozen=True)
class WireShare:
    """The bytes one image is charged for on the wire."""

    transmitted_bytes: int  # its spike payload as sent, FEC parity included
    message_bytes: int  # the whole gRPC message(s) that carried it
    compression_ratio: float  # its split block's spikes at 1 bit each / the payload bytes sent for them

    @classmethod
    def of_frame(cls, frame: pb.SpikeFrame, uncompressed_bytes: int) -> list[WireShare]:
        """Each image's share of ``frame`` [T, B, C', H', W'], by row: the payload and the whole message divided
        evenly among the B images, in whole bytes, so that the shares add up to the frame's (a sparse or entropy
        payload is one stream that cannot be attributed to images bit by bit). The ratio is the frame's:
        B * ``uncompressed_bytes`` (one image's split-block spikes at 1 bit each) / payload bytes."""
        images, payload = frame.shape[1], len(frame.payload)
        ratio = images * uncompressed_bytes / payload
        return [
            cls(transmitted, message, ratio)
            for transmitted, message in zip(
                even_shares(payload, images), even_shares(frame.ByteSize(), images), strict=True
            )
        ]


@dataclass(frozen=True)
class StreamSteps:
    """How far a streamed request went."""

    sent: int  # time steps sent to the edge, one message each
    computed: int  # time steps the head computed: one more than sent when it had worked ahead of an early exit
    early_exit: float | None  # the threshold applied; None: every step sent


@dataclass(frozen=True)
class ImageResult:
    """What a path measured for one image: everything its Classification is built from."""

    checkpoint: CheckpointInfo  # the model that classified it
    spikes: ImageSpikes  # the head's output for it
    logits: np.ndarray  # float32 [num_classes], from the tail
    latency: Latency  # of the request (a batch's images share it)
    wire: WireShare
    transmit_mj: float | None = None  # the radio's energy to send wire.message_bytes; None: no link (sbn predict)
    head_batch_images: int | None = None  # images in the head run that carried it (split path)
    edge_batch_images: int | None = None  # images in the edge's tail run that carried it (split path)
    link_damage: LinkDamage | None = None  # split path
    split_choice: SplitChoice | None = None  # split_point=auto's
    edge_replica: str | None = None  # the edge replica that answered, where it said
    steps: StreamSteps | None = None  # a streamed request's


class Classification(BaseModel):
    label: str | None = Field(description="the predicted class; null for a blank input, where there is none")
    class_index: int | None = Field(description="its index; null for a blank input")
    probability: float | None = Field(description="softmax probability of the predicted class; null for a blank input")
    blank: bool = Field(
        description="the input holds nothing to classify (one flat colour, or a handwriting upload "
        "with no ink): no label is given, and the answer is uncertain"
    )
    uncertain: bool = Field(
        description="no confident answer: a blank input, uncertainty_score below the model's calibrated threshold "
        "(set on its validation images), or, for a handwriting model, more ink than any training image "
        "had or strokes thicker than any training digit's (noise, photos); see shared/uncertainty.py"
    )
    uncertainty_score: float = Field(description="the score the threshold applies to: the maximum softmax probability")
    top5: list[ClassProbability] = Field(description="the most probable classes, best first; empty for a blank input")
    arch: str = Field(description="the backbone, e.g. spiking_resnet50 or spiking_mobilenetv2")
    split_point: int = Field(description="k: the bottleneck follows the backbone's k-th block")
    split_point_name: str = Field(description="that block's name: RBk (ResNet50), IRBk (MobileNetV2)")
    time_steps: int = Field(description="T: spiking time steps")
    spike_shape: list[int] = Field(description="T, C', H', W' of the transmitted spike tensor")
    codec: str = Field(description="codec that packed the payload: raw, sparse or entropy")
    transmitted_bytes: int = Field(description="spike payload as sent (its FEC parity included), bytes")
    message_bytes: int = Field(description="whole serialized gRPC request (payload and envelope), bytes")
    float32_feature_bytes: int = Field(
        description="the split block's output feature map as float32 (C*H*W*4): what an ANN split after the same "
        "block would send, bytes"
    )
    image_bytes: int = Field(description="the uploaded image file, bytes")
    compression_ratio: float = Field(
        description="bytes of the split block's output spikes at 1 bit each (what an unsplit model would send) / "
        "transmitted bytes"
    )
    energy: Energy
    latency_ms: Latency
    model: ModelSummary
    head_batch_images: int | None = Field(
        default=None,
        description="images in the device's head run that carried this one (concurrent uploads share one forward)",
    )
    split_choice: SplitChoice | None = Field(
        default=None, description="with split_point=auto: the link and the estimate the choice was made on"
    )
    edge_batch_images: int | None = Field(
        default=None,
        description="images in the edge's tail run that carried this one (frames that arrive together "
        "run as one batch)",
    )
    link_damage: LinkDamage | None = Field(
        default=None, description="what the link did to the frame: FEC repairs, entropy chunks erased (split path)"
    )
    edge_replica: str | None = Field(
        default=None,
        description="the edge replica that ran the tail, as it names itself (host:pid for sbn edge, the "
        "replica id under Ray Serve), where the device balances over several; not for "
        "streamed requests",
    )
    time_steps_sent: int | None = Field(
        default=None,
        description="streamed (?stream=true or ?early_exit=p): the time steps sent to the edge, one "
        "message each; fewer than time_steps when early exit stopped the stream",
    )
    time_steps_computed: int | None = Field(
        default=None,
        description="streamed: the time steps the head computed (one more than sent when it had "
        "worked ahead on a step the stream did not need); the energy is theirs",
    )
    early_exit: float | None = Field(
        default=None,
        description="the early-exit threshold applied: the stream stopped at the first step whose "
        "running logits gave a class at least this softmax probability",
    )
    logits: list[float] | None = Field(default=None, description="raw logits, with ?logits=true")
    spikes: SpikeRaster | None = Field(default=None, description="the transmitted spikes, with ?spikes=true")

    @model_serializer(mode="wrap")
    def _blank_says_null(self, handler: SerializerFunctionWrapHandler):  # no return type: the schema stays the model's
        # answers leave out what does not apply (exclude_none), but a blank input's missing label is the
        # answer itself: it stays, as null
        fields = handler(self)
        return {"label": None, "class_index": None, "probability": None, **fields} if self.blank else fields

    @classmethod
    def build(
        cls, result: ImageResult, include_logits: bool = False, include_spikes: bool = False, **fields: Any
    ) -> Self:
        """The body for one image (``include_logits`` / ``include_spikes``: ?logits=true / ?spikes=true); ``fields``:
        a subclass's own (a batch entry's index and filename)."""
        image, checkpoint, logits = result.spikes, result.checkpoint, result.logits
        config = checkpoint.config
        probabilities = softmax(logits)  # [num_classes]
        score = float(max_softmax(logits))
        top = np.argsort(-probabilities, kind="stable")[:TOP_K].tolist()  # the most probable first; ties by index
        top5 = (
            []
            if image.traits.blank
            else [ClassProbability(label=config.label(i), probability=float(probabilities[i])) for i in top]
        )
        geometry = config.geometry()
        transmit_mj, steps = result.transmit_mj, result.steps
        return cls(
            label=top5[0].label if top5 else None,
            class_index=top[0] if top5 else None,
            probability=top5[0].probability if top5 else None,
            blank=image.traits.blank,
            # an unverified info's threshold is not trusted: every answer is then uncertain
            uncertain=not checkpoint.info_verified or is_uncertain(score, image.traits, checkpoint.info.uncertainty),
            uncertainty_score=score,
            top5=top5,
            arch=config.backbone.arch,
            split_point=geometry.point.index,
            split_point_name=geometry.point.name,
            time_steps=config.time_steps,
            spike_shape=list(geometry.spike_shape),
            codec=image.codec.value,
            transmitted_bytes=result.wire.transmitted_bytes,
            message_bytes=result.wire.message_bytes,
            float32_feature_bytes=geometry.float32_feature_bytes,
            image_bytes=image.image_bytes,
            compression_ratio=result.wire.compression_ratio,
            energy=Energy.model_validate(image.energy, from_attributes=True).model_copy(
                update={
                    "transmit_mj": transmit_mj,
                    "device_total_mj": None if transmit_mj is None else image.energy.device_45nm_mj + transmit_mj,
                }
            ),
            latency_ms=result.latency,
            model=ModelSummary(
                fingerprint=checkpoint.fingerprint, trained=checkpoint.trained, note=model_note(checkpoint)
            ),
            head_batch_images=result.head_batch_images,
            split_choice=result.split_choice,
            edge_batch_images=result.edge_batch_images,
            link_damage=result.link_damage,
            edge_replica=result.edge_replica,
            time_steps_sent=None if steps is None else steps.sent,
            time_steps_computed=None if steps is None else steps.computed,
            early_exit=None if steps is None else steps.early_exit,
            logits=logits.tolist() if include_logits else None,
            spikes=spike_raster(image) if include_spikes else None,
            **fields,
        )


def model_note(checkpoint: CheckpointInfo) -> str | None:
    if not checkpoint.info_verified:
        return UNVERIFIED_NOTE
    return None if checkpoint.trained else UNTRAINED_NOTE


def spike_raster(image: ImageSpikes) -> SpikeRaster:
    """The image's transmitted spikes [T, 1, C', H', W'] as [T, C', H', W'], packed one bit each (the raw codec)."""
    spikes = image.spikes[:, 0]
    _, packed = encode(spikes, Codec.RAW, assume_binary=True)  # the encoder LIF's output
    return SpikeRaster(shape=list(spikes.shape), bits=base64.b64encode(packed).decode("ascii"))
