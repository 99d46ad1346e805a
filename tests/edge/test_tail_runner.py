"""TailRunner: the frame checks and the tail itself, in-process (the gRPC mapping is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.edge.tail_runner import FingerprintMismatch, InvalidFrame, TailRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.codec import encode
from spikebottlenet.v1 import split_inference_pb2 as pb
from tests.stack import altered, monolithic_logits


def test_a_frame_from_the_head_gives_the_monolithic_logits(
    runner: TailRunner, frame: pb.SpikeFrame, checkpoint: Path
) -> None:
    result = runner.run(frame)
    assert result.logits.shape == (1, 10)
    torch.testing.assert_close(result.logits[0], monolithic_logits(checkpoint, synthetic_png()), rtol=0, atol=1e-5)
    assert result.decode_ms >= 0 and result.inference_ms > 0


def test_a_batch_of_two_runs_each_image_as_alone(runner: TailRunner, checkpoint: Path) -> None:
    head = HeadRunner.load(checkpoint)
    outputs = [head.run(synthetic_png(seed)) for seed in (1, 2)]
    spikes = np.concatenate([o.spikes for o in outputs], axis=1)  # [T, 2, C', H', W']
    _, payload = encode(spikes, "sparse")
    frame = altered(outputs[0].frame, shape=list(spikes.shape), codec=pb.CODEC_SPARSE, payload=payload)
    logits = runner.run(frame).logits
    for i, seed in enumerate((1, 2)):
        torch.testing.assert_close(logits[i], monolithic_logits(checkpoint, synthetic_png(seed)), rtol=0, atol=1e-5)


def test_model_info_describes_the_checkpoint(runner: TailRunner) -> None:
    info = runner.model_info()
    assert info.model_fingerprint == runner.fingerprint
    assert (info.split_point, tuple(info.spike_shape), info.num_classes, info.trained) == (
        8,
        runner.spike_shape,
        10,
        False,
    )
    assert (info.arch, info.split_point_name) == ("spiking_resnet50", "RB8")
    assert (runner.split_point.index, runner.split_point.name) == (8, "RB8")


def test_another_models_frame_is_refused_naming_both_fingerprints(runner: TailRunner, frame: pb.SpikeFrame) -> None:
    other = "ab" * 32
    with pytest.raises(FingerprintMismatch) as e:
        runner.run(altered(frame, model_fingerprint=other))
    assert other in str(e.value) and runner.fingerprint in str(e.value)


# (field changes, words the message must contain); T, C', H', W' at RB8 of the narrow model: 4, 4, 8, 8
MALFORMED = {
    "wrong split point": (dict(split_point=7), ["split point 7", "RB8"]),
    "four shape entries": (dict(shape=[4, 4, 8, 8]), ["5 entries", "[4, 4, 8, 8]"]),
    "wrong channels": (dict(shape=[4, 1, 3, 8, 8]), ["[4, 1, 3, 8, 8]", "(4, B, 4, 8, 8)"]),
    "batch of zero": (dict(shape=[4, 0, 4, 8, 8]), ["batch size 0", "1..2"]),
    "batch over the limit": (dict(shape=[4, 3, 4, 8, 8]), ["batch size 3", "1..2"]),
    "unspecified codec": (dict(codec=pb.CODEC_UNSPECIFIED), ["unspecified"]),
    "unknown codec": (dict(codec=7), ["unknown codec 7"]),
    "short raw payload": (dict(payload=b"\x00" * 127), ["127 bytes", "exactly 128"]),
    "long raw payload": (dict(payload=b"\x00" * 129), ["129 bytes", "exactly 128"]),
    "empty payload": (dict(payload=b""), ["0 bytes", "exactly 128"]),
    "corrupt sparse payload": (dict(codec=pb.CODEC_SPARSE, payload=b"\xff\x00"), ["corrupt sparse payload"]),
    "sparse payload of another size": (
        dict(codec=pb.CODEC_SPARSE, payload=encode(torch.zeros(100), "sparse")[1]),
        ["declares 100 bits", "needs 1024"],
    ),
    "odd parity": (dict(fec_parity_bytes=3), ["even", "not 3"]),
    # 128 raw bytes take one block: 128 + 64 parity bytes at most, refused before the decoder works on it
    "protected payload longer than any": (
        dict(fec_parity_bytes=64, payload=bytes(3 * 255)),
        ["765 bytes", "longer than any raw payload", "(192)"],
    ),
}


@pytest.mark.parametrize("fields, words", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_frame_is_refused_naming_the_problem(
    runner: TailRunner, frame: pb.SpikeFrame, fields: dict, words: list[str]
) -> None:
    with pytest.raises(InvalidFrame) as e:
        runner.run(altered(frame, **fields))
    for word in words:
        assert word in str(e.value)
