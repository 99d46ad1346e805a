"""Hostile spike frames: random shapes, codecs, lengths and bytes, against the edge's checks and decoding.

Over gRPC to a real edge process, a frame either runs (logits for its batch) or is refused with
INVALID_ARGUMENT, or FAILED_PRECONDITION when it names another model; never UNKNOWN or INTERNAL
(an exception escaping the servicer), and the edge answers a correct frame correctly afterwards.
In-process, TailRunner raises only FrameError, and never decodes a shape before checking it
against the checkpoint: a frame declaring a huge tensor costs nothing.
"""

from __future__ import annotations

import math
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.edge import tail_runner
from spikebottlenet.edge.settings import EdgeSettings
from spikebottlenet.edge.tail_runner import FingerprintMismatch, FrameError, TailRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint_metadata import read_checkpoint_info
from spikebottlenet.shared.codec import encode, raw_length
from spikebottlenet.shared.spike_tensors import ReceivedFrame
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import EdgeProcess, monolithic_logits

from .fuzz import mutate

EDGE_MAX_BATCH = EdgeSettings.model_fields["max_batch"].default  # the edge process runs the default
RUNNER_MAX_BATCH = 2  # the in-process runner: smaller batches, more examples per second
U32 = st.integers(0, 2**32 - 1)
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
FUZZ_FRAMES = 1000
EXAMPLES = {"grpc": 300, "in-process": 1500}

Info = tuple[str, int, tuple[int, ...]]  # fingerprint, split point, spike shape (T, C', H', W')
Reference = tuple[pb.SpikeFrame, torch.Tensor]  # a correct frame, the monolithic model's logits for it


@st.composite
def frames(
    draw: st.DrawFn, fingerprint: str, split_point: int, spike_shape: tuple[int, ...], max_batch: int
) -> pb.SpikeFrame:
    """Frames near the valid ones, each field right or wrong in every way, so both the checks and the
    decoders get exercised: wrong in type (shapes of any rank and size, unknown codecs), in value
    (another model, another split), in length (payloads short, long, empty) and in content."""
    t, c, h, w = spike_shape

    def right() -> bool:  # each field is right 80% of the time
        return draw(st.integers(0, 9)) < 8

    shape = (
        [t, draw(st.integers(0, max_batch + 1)), c, h, w]
        if right()
        else draw(st.lists(st.one_of(st.integers(0, 16), U32), max_size=8))
    )
    codec = draw(
        st.sampled_from([pb.CODEC_RAW, pb.CODEC_SPARSE, pb.CODEC_ENTROPY])
        if right()
        else st.integers(-(2**31), 2**31 - 1)
    )
    bits = math.prod(shape) if shape and len(shape) <= 5 and math.prod(shape) <= 100_000 else None
    payload_kinds = ["random"] + (["raw", "raw off by some", "sparse"] if bits else [])
    kind = draw(st.sampled_from(payload_kinds))
    if kind == "raw":
        payload = draw(st.binary(min_size=raw_length(shape), max_size=raw_length(shape)))
    elif kind == "raw off by some":
        payload = draw(st.binary(max_size=raw_length(shape) + 9).filter(lambda p: len(p) != raw_length(shape)))
    elif kind == "sparse":
        fire = draw(st.floats(0, 1))
        spikes = torch.rand(bits, generator=torch.Generator().manual_seed(draw(U32))) < fire
        payload = encode(spikes, "sparse")[1]
    else:
        payload = draw(st.binary(max_size=3000))
    return pb.SpikeFrame(
        request_id=draw(st.text(max_size=40)),
        model_fingerprint=fingerprint if right() else draw(st.text(max_size=80)),
        split_point=split_point if right() else draw(U32),
        shape=shape,
        codec=codec,
        payload=payload,
        fec_parity_bytes=0 if right() else draw(st.one_of(st.sampled_from([2, 16, 64]), U32)),
    )


@pytest.fixture(scope="module")
def info(checkpoint: Path) -> Info:
    config = read_checkpoint_info(checkpoint)
    assert config.config.bottleneck is not None
    return config.fingerprint, config.config.bottleneck.split_point, config.config.spike_shape


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> Reference:
    return HeadRunner.load(checkpoint).run(synthetic_png()).frame, monolithic_logits(checkpoint, synthetic_png())


@pytest.fixture(scope="module")
def stub(edge: EdgeProcess) -> Iterator[pb_grpc.SplitInferenceStub]:
    with grpc.insecure_channel(edge.address) as channel:
        yield pb_grpc.SplitInferenceStub(channel)


@pytest.fixture(scope="module")
def tally(report: Callable[[str], None]) -> Iterator[Counter[str]]:
    """Outcomes of every frame sent to the edge process in this module, reported at its end."""
    counts: Counter[str] = Counter()
    yield counts
    report(
        f"hostile frames over gRPC: {sum(counts.values())} frames ({EXAMPLES['grpc']} generated by hypothesis, "
        f"{FUZZ_FRAMES} mutated): "
        + ", ".join(f"{n} {outcome}" for outcome, n in counts.most_common())
        + "; no UNKNOWN or INTERNAL; the edge answered the reference frame correctly after each run"
    )


def send(stub: pb_grpc.SplitInferenceStub, frame: pb.SpikeFrame, fingerprint: str, tally: Counter[str]) -> None:
    """One frame: logits for its batch, or a refusal with the status its fault calls for."""
    try:
        reply = stub.Infer(frame, timeout=30)
    except grpc.RpcError as e:
        assert e.code() in REFUSALS, f"{e.code()}: {e.details()}"
        wrong_model = frame.model_fingerprint != fingerprint
        assert (e.code() == grpc.StatusCode.FAILED_PRECONDITION) == wrong_model, e.details()
        tally[e.code().name] += 1
        return
    assert len(frame.shape) == 5 and len(reply.values) == frame.shape[1] * reply.num_classes
    tally["OK"] += 1


def assert_still_correct(stub: pb_grpc.SplitInferenceStub, reference: Reference[pb.SpikeFrame, torch.Tensor]) -> None:
    frame, logits = reference
    torch.testing.assert_close(torch.tensor(stub.Infer(frame, timeout=30).values), logits, rtol=0, atol=1e-5)


def test_generated_frames_over_grpc_run_or_are_refused(
    stub: pb_grpc.SplitInferenceStub, info: Info, reference: Reference, tally: Counter[str]
) -> None:
    fingerprint, split_point, spike_shape = info

    @settings(max_examples=EXAMPLES["grpc"], deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frame=frames(fingerprint, split_point, spike_shape, EDGE_MAX_BATCH))
    def property(frame: pb.SpikeFrame) -> None:
        send(stub, frame, fingerprint, tally)

    property()
    assert_still_correct(stub, reference)


def test_mutated_frames_over_grpc_run_or_are_refused(
    stub: pb_grpc.SplitInferenceStub, info: Info, reference: Reference, tally: Counter[str]
) -> None:
    """Bounded fuzz run: correct raw and sparse frames of 1 and 2 images, their payloads and shapes mutated."""
    fingerprint, _, (t, c, h, w) = info
    rng = random.Random(0)
    spikes = torch.rand(t, 2, c, h, w, generator=torch.Generator().manual_seed(0)) < 0.1
    valid = [
        pb.SpikeFrame(
            model_fingerprint=fingerprint,
            split_point=info[1],
            shape=[t, b, c, h, w],
            codec=pb.CODEC_RAW if codec == "raw" else pb.CODEC_SPARSE,
            payload=encode(spikes[:, :b], codec)[1],
        )
        for b in (1, 2)
        for codec in ("raw", "sparse")
    ]
    for _ in range(FUZZ_FRAMES):
        frame = pb.SpikeFrame()
        frame.CopyFrom(rng.choice(valid))
        frame.payload = mutate(rng, frame.payload)
        if rng.random() < 0.2:  # now and then the shape too, one entry to anything
            frame.shape[rng.randrange(5)] = rng.choice((0, 1, 3, 255, 2**16, 2**32 - 1))
        send(stub, frame, fingerprint, tally)
    assert_still_correct(stub, reference)


@pytest.fixture(scope="module")
def guarded_runner(checkpoint: Path) -> Iterator[TailRunner]:
    """A TailRunner whose decoder fails the test if it is ever handed a shape the checkpoint does not allow."""
    runner = TailRunner.load(checkpoint, max_batch=RUNNER_MAX_BATCH)
    decode = tail_runner.decode_received

    def checked_decode(payload: bytes, shape: tuple[int, ...], codec: object, **options: object) -> ReceivedFrame:
        t, b, c, h, w = shape
        assert (t, c, h, w) == runner.spike_shape and 1 <= b <= runner.max_batch, f"decoding shape {shape}"
        return decode(payload, shape, codec, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tail_runner, "decode_received", checked_decode)
        yield runner


def test_generated_frames_in_process_run_or_raise_frame_error(
    guarded_runner: TailRunner, info: Info, report: Callable[[str], None]
) -> None:
    fingerprint, split_point, spike_shape = info
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES["in-process"], deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(frame=frames(fingerprint, split_point, spike_shape, RUNNER_MAX_BATCH))
    def property(frame: pb.SpikeFrame) -> None:
        try:
            result = guarded_runner.run(frame)
        except FrameError as e:
            assert isinstance(e, FingerprintMismatch) == (frame.model_fingerprint != fingerprint)
            outcomes[type(e).__name__] += 1
            return
        assert result.logits.shape == (frame.shape[1], 10)
        outcomes["ran"] += 1

    property()
    report(
        f"hostile frames in-process: {sum(outcomes.values())} generated frames through TailRunner: "
        + ", ".join(f"{n} {outcome}" for outcome, n in outcomes.most_common())
        + "; no other exception, and no shape decoded before it was checked against the checkpoint"
    )


@pytest.mark.parametrize("shape", [[2**32 - 1] * 5, [4, 2**32 - 1, 4, 8, 8], [4, 1, 4, 2**31, 2**31]])
def test_a_huge_declared_shape_is_refused_without_allocating(
    guarded_runner: TailRunner, info: Info, reference: Reference, shape: list[int]
) -> None:
    frame = pb.SpikeFrame()
    frame.CopyFrom(reference[0])
    del frame.shape[:]
    frame.shape.extend(shape)
    for codec, payload in ((pb.CODEC_RAW, b"\xff" * 64), (pb.CODEC_SPARSE, b"\x18" + b"\xff" * 8)):
        frame.codec, frame.payload = codec, payload
        tracemalloc.start()
        try:
            with pytest.raises(FrameError, match="outside|does not match"):
                guarded_runner.run(frame)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024, f"{peak} bytes allocated to refuse shape {shape}"
