"""The result body shared by /classify and `sbn predict`: probabilities, byte counts, the model note."""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from spikebottlenet.device.classification import (
    UNTRAINED_NOTE,
    UNVERIFIED_NOTE,
    Classification,
    ImageResult,
    Latency,
    WireShare,
)
from spikebottlenet.device.head_runner import HeadRunner, ImageSpikes
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint_metadata import CheckpointInfo, TrainingRecord
from spikebottlenet.shared.codec import raw_length
from spikebottlenet.v1 import split_inference_pb2 as pb

LATENCY = Latency(device=1.0, total=2.0)


def classification_of(
    logits: np.ndarray,
    output: ImageSpikes,
    checkpoint: CheckpointInfo,
    include_logits: bool = False,
    include_spikes: bool = False,
) -> Classification:
    """The body of one image classified alone, in its own frame (as sbn predict classifies it)."""
    (wire,) = WireShare.of_frame(output.frame, checkpoint.config.geometry().uncompressed_bytes)
    return Classification.build(ImageResult(checkpoint, output, logits, LATENCY, wire), include_logits, include_spikes)


@pytest.fixture(scope="module")
def head(calibrated_checkpoint: Callable[..., Path]) -> HeadRunner:
    return HeadRunner.load(calibrated_checkpoint(8))


@pytest.fixture(scope="module")
def output(head: HeadRunner) -> ImageSpikes:
    return head.run(synthetic_png())


def test_prediction_and_top5_follow_the_softmax(head: HeadRunner, output: ImageSpikes) -> None:
    logits = np.array([0.1, 3.0, 1.0, -1.0, 2.0, 0.5, 0.0, -0.2, -0.3, -0.4], dtype=np.float32)
    result = classification_of(logits, output, head.checkpoint)
    probabilities = torch.from_numpy(logits).softmax(0)  # torch: a reference independent of the module's numpy
    assert (result.class_index, result.label) == (1, "class 1")
    assert result.probability == pytest.approx(float(probabilities[1]))
    assert [c.label for c in result.top5] == ["class 1", "class 4", "class 2", "class 5", "class 0"]
    assert [c.probability for c in result.top5] == sorted((c.probability for c in result.top5), reverse=True)
    assert result.logits is None
    assert classification_of(logits, output, head.checkpoint, include_logits=True).logits == pytest.approx(
        logits.tolist()
    )


def test_byte_counts_and_compression_ratio(head: HeadRunner, output: ImageSpikes) -> None:
    result = classification_of(np.zeros(10, np.float32), output, head.checkpoint)
    # By hand: RB8 is the first block of the Spike ResNet50's third stage (stages of 3, 4, 6, 3 blocks), 1024
    # channels at full width, so 1024 / 16 = 64 at the tests' width 1/16, at 8 x 8 for a 32 x 32 image (the second
    # and third stages halve it). Table 1 at RB8: 16x and T = 4, stride 1, so C' = 64 / 16 = 4 channels.
    assert result.spike_shape == [4, 4, 8, 8] and result.time_steps == 4 and result.split_point == 8
    assert (result.arch, result.split_point_name) == ("spiking_resnet50", "RB8")
    assert result.codec == "raw"
    # raw: one bit per spike, T x C' x H' x W' = 1,024 bits
    assert result.transmitted_bytes == 4 * 4 * 8 * 8 // 8 == 128 == len(output.frame.payload)
    assert result.message_bytes == output.frame.ByteSize() > result.transmitted_bytes  # protobuf's own count
    # the block's own spikes, T x 64 x 8 x 8 bits, over those sent
    assert result.compression_ratio == (4 * 64 * 8 * 8) / (4 * 4 * 8 * 8) == 16.0


def test_a_frames_bytes_are_shared_evenly_among_its_images() -> None:
    # a frame of B = 3 RB8 images whose payload (a sparse one, say) came to 385 bytes
    frame = pb.SpikeFrame(
        request_id="r", model_fingerprint="f", split_point=8, shape=[4, 3, 4, 8, 8], payload=bytes(385)
    )
    uncompressed = 4 * 64 * 8 * 8 // 8  # one image's RB8 spikes at 1 bit each: 2,048 bytes
    shares = WireShare.of_frame(frame, uncompressed)
    assert [s.transmitted_bytes for s in shares] == [129, 128, 128]  # 385 = 3 x 128 + 1: the first one byte more
    message = frame.ByteSize()
    assert [s.message_bytes for s in shares] == [message // 3 + (i < message % 3) for i in range(3)]
    assert sum(s.message_bytes for s in shares) == message
    assert {s.compression_ratio for s in shares} == {3 * 2048 / 385}  # the frame's, not each share's


def test_energy_is_the_heads_estimate(head: HeadRunner, output: ImageSpikes) -> None:
    energy = classification_of(np.zeros(10, np.float32), output, head.checkpoint).energy
    assert energy.device_45nm_mj == output.energy.device_45nm_mj > 0
    assert energy.syops == output.energy.syops > 0
    assert 0 < energy.firing_rate < 1
    assert energy.device_rolls_mj < energy.device_45nm_mj < energy.ann_baseline_45nm_mj


@pytest.mark.parametrize("trained, note", [(False, UNTRAINED_NOTE), (True, None)])
def test_the_model_note_warns_only_about_untrained_weights(
    head: HeadRunner, output: ImageSpikes, trained: bool, note: str | None
) -> None:
    checkpoint: CheckpointInfo = dataclasses.replace(
        head.checkpoint, info=TrainingRecord(trained=trained), info_verified=True
    )
    model = classification_of(np.zeros(10, np.float32), output, checkpoint).model
    assert (model.fingerprint, model.trained, model.note) == (checkpoint.fingerprint, trained, note)


def test_unverified_info_is_untrained_and_never_confident(head: HeadRunner, output: ImageSpikes) -> None:
    confident = np.array([50.0] + [0.0] * 9, dtype=np.float32)  # softmax ~1 for class 0: above any calibrated threshold
    checkpoint = dataclasses.replace(head.checkpoint, info=TrainingRecord(trained=True), info_verified=False)
    result = classification_of(confident, output, checkpoint)
    assert (result.model.trained, result.model.note) == (False, UNVERIFIED_NOTE)
    assert result.uncertain and result.probability > 0.99


def test_the_feature_and_image_sizes_beside_the_payload(head: HeadRunner, output: ImageSpikes) -> None:
    result = classification_of(np.zeros(10, np.float32), output, head.checkpoint)
    block = head.checkpoint.config.backbone.block_specs()[7]  # RB8's output, what an ANN split would send
    assert result.float32_feature_bytes == block.out_channels * block.out_size**2 * 4
    assert result.image_bytes == len(synthetic_png()) == output.image_bytes


def test_spikes_only_when_asked_unpack_to_the_transmitted_tensor(head: HeadRunner, output: ImageSpikes) -> None:
    assert classification_of(np.zeros(10, np.float32), output, head.checkpoint).spikes is None
    result = classification_of(np.zeros(10, np.float32), output, head.checkpoint, include_spikes=True)
    assert result.spikes is not None and result.spikes.shape == result.spike_shape
    packed = np.frombuffer(base64.b64decode(result.spikes.bits, validate=True), dtype=np.uint8)
    assert len(packed) == raw_length(tuple(result.spike_shape))
    n = math.prod(result.spike_shape)
    bits = np.unpackbits(packed)
    assert not bits[n:].any()  # zero padding
    spikes = bits[:n].reshape(result.spike_shape).astype(bool)
    assert np.array_equal(spikes, output.spikes[:, 0]) and spikes.any()


def test_a_blank_input_is_answered_without_a_label_and_says_so(head: HeadRunner) -> None:
    blank = head.run(png_of(np.full((40, 40, 3), (200, 30, 90), np.uint8)))  # one flat colour
    result = classification_of(np.array([9.0] + [0.0] * 9, np.float32), blank, head.checkpoint)
    assert blank.traits.blank and result.blank and result.uncertain
    assert (result.label, result.class_index, result.probability, result.top5) == (None, None, None, [])
    # the answers leave out fields that do not apply, but not these: a client reads label: null
    body = result.model_dump(exclude_none=True)
    assert body["blank"] is True and {"label", "class_index", "probability"} <= body.keys()
    assert body["label"] is None
    drawn = classification_of(np.array([9.0] + [0.0] * 9, np.float32), head.run(synthetic_png()), head.checkpoint)
    assert not drawn.blank and drawn.label == "class 0"
    # the schema in /docs and /openapi.json is still the model's fields
    schema = type(result).model_json_schema(mode="serialization")
    assert {"label", "blank", "top5", "uncertain"} <= schema["properties"].keys()


def png_of(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
