"""SplitPipeline on its own: real heads (the test checkpoints) in front of a fake edge, a real gRPC server on
127.0.0.1 whose answers are known in advance.

- choose: split_point=auto's hysteresis, the models' costs and the link set so that every score is known by hand
- classify: the request's options against the settings; a batch's images in one frame, each answered by its own
  row of the frame's logits; a streamed request stopping at its early exit
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from spikebottlenet.device.classification import Classification
from spikebottlenet.device.deadline import Deadline
from spikebottlenet.device.edge_client import EdgeClient
from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.device.metrics import DeviceMetrics
from spikebottlenet.device.model_set import ModelCosts, ServedModel
from spikebottlenet.device.pipeline import ClassifyOptions, SplitPipeline
from spikebottlenet.device.settings import DeviceSettings
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc

T = TypeVar("T")
NUM_CLASSES = 10
CONFIDENT_FROM_STEP = 1  # the fake edge's running logits give class STREAM_CLASS ~all the softmax from this step on
STREAM_CLASS = 3


class FakeEdge(pb_grpc.SplitInferenceServicer):
    """Serves the tails of ``fingerprints``. Infer answers row b of a frame with logits that put class b first, so an
    answer shows which row of the frame carried its image; InferStream answers each step with running logits that
    are uniform before CONFIDENT_FROM_STEP and then all but certain of STREAM_CLASS."""

    def __init__(self) -> None:
        self.fingerprints: list[str] = []
        self.frames: list[pb.SpikeFrame] = []
        self.steps: list[pb.SpikeStep] = []

    def GetModelInfo(self, request: pb.ModelInfoRequest, context: grpc.ServicerContext) -> pb.ModelInfo:
        models = [pb.ModelInfo(model_fingerprint=f, inference_ms=1.0) for f in self.fingerprints]
        return pb.ModelInfo(model_fingerprint=self.fingerprints[0], models=models)

    def Infer(self, frame: pb.SpikeFrame, context: grpc.ServicerContext) -> pb.Logits:
        self.frames.append(frame)
        batch = frame.shape[1]
        values = [20.0 if c == b else 0.0 for b in range(batch) for c in range(NUM_CLASSES)]
        return pb.Logits(
            request_id=frame.request_id,
            batch_size=batch,
            num_classes=NUM_CLASSES,
            values=values,
            model_fingerprint=frame.model_fingerprint,
            timing=pb.EdgeTiming(total_ms=1.0, batch_images=batch),
        )

    def InferStream(self, steps: Iterator[pb.SpikeStep], context: grpc.ServicerContext) -> Iterator[pb.RunningLogits]:
        first = None
        for step in steps:
            self.steps.append(step)
            first = first or step
            confident = step.step >= CONFIDENT_FROM_STEP
            values = [20.0 if confident and c == STREAM_CLASS else 0.0 for c in range(NUM_CLASSES)]
            yield pb.RunningLogits(
                request_id=first.request_id,
                step=step.step,
                batch_size=1,
                num_classes=NUM_CLASSES,
                values=values,
                model_fingerprint=first.model_fingerprint,
                inference_ms=1.0,
            )


@pytest.fixture(scope="module")
def fake_edge() -> Iterator[tuple[FakeEdge, str]]:
    fake = FakeEdge()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SplitInferenceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture(scope="module")
def heads(calibrated_checkpoint: Callable[..., Path]) -> list[HeadRunner]:
    """RB8 (the default model) and RB3 of the test ResNet50."""
    return [HeadRunner.load(calibrated_checkpoint(k)) for k in (8, 3)]


@pytest.fixture
def edge(fake_edge: tuple[FakeEdge, str], heads: list[HeadRunner]) -> Iterator[tuple[FakeEdge, str]]:
    fake, address = fake_edge
    fake.fingerprints = [head.checkpoint.fingerprint for head in heads]
    fake.frames.clear()
    fake.steps.clear()
    yield fake, address


def with_pipeline(
    heads: list[HeadRunner], edge_address: str, scenario: Callable[[SplitPipeline], Awaitable[T]], **settings: object
) -> T:
    """``scenario(pipeline)`` on an event loop of its own, the pipeline started and closed around it. The link is
    Wi-Fi's radio at 8 Mbps and no round trip: a frame of b bytes takes b / 1000 ms to send."""
    device_settings = DeviceSettings(
        edge_address=edge_address, max_accuracy_drop=None, link="wifi", link_rate_mbps=8.0, link_rtt_ms=0.0, **settings
    )

    async def main() -> T:
        async with EdgeClient(edge_address, 5.0, 4) as client:
            pipeline = SplitPipeline(heads, client, device_settings, DeviceMetrics())
            await pipeline.start()
            try:
                return await scenario(pipeline)
            finally:
                await pipeline.close()

    return asyncio.run(main())


def cost(model: ServedModel, device_ms: float, message_bytes: int, edge_ms: float) -> None:
    """``model``'s costs from now on: on the 8 Mbps link above, a latency of device_ms + message_bytes / 1000 +
    edge_ms."""
    model.costs = ModelCosts(device_ms, 0.01, message_bytes)
    model.costs.observe_edge(edge_ms)


def test_auto_keeps_its_split_point_while_it_scores_within_ten_percent_of_the_best(
    heads: list[HeadRunner], edge: tuple[FakeEdge, str]
) -> None:
    async def scenario(pipeline: SplitPipeline) -> list[tuple[int, float]]:
        rb8, rb3 = pipeline.models
        chosen = []

        async def auto() -> None:
            model, choice = await pipeline.choose(None, "auto", Deadline.after(5.0))
            assert choice is not None and choice.candidates == 2 and choice.link_rate_mbps == 8.0
            chosen.append((model.key[1], choice.predicted_latency_ms))

        cost(rb8, 10.0, 1000, 9.0)  # 10 + 1 + 9 = 20 ms
        cost(rb3, 5.0, 2000, 15.0)  # 5 + 2 + 15 = 22 ms
        await auto()  # RB8, the best
        cost(rb3, 5.0, 2000, 12.0)  # 19 ms: RB8's 20 is within 10 % of it (<= 20.9)
        await auto()
        named, _ = await pipeline.choose(None, "3", Deadline.after(5.0))  # a request naming RB3 is no auto choice
        assert named is rb3
        await auto()
        cost(rb3, 5.0, 2000, 11.0)  # 18 ms: RB8's 20 is more than 10 % worse (> 19.8)
        await auto()
        cost(rb8, 10.0, 1000, 6.0)  # 17 ms: RB3's 18 is within 10 % of it (<= 18.7)
        await auto()
        cost(rb8, 10.0, 1000, 5.0)  # 16 ms: RB3's 18 is more than 10 % worse (> 17.6)
        await auto()
        return chosen

    chosen = with_pipeline(heads, edge[1], scenario)
    assert chosen == [(8, 20.0), (8, 20.0), (8, 20.0), (3, 18.0), (3, 18.0), (8, 16.0)]


def test_auto_without_a_previous_choice_takes_the_best_however_close(
    heads: list[HeadRunner], edge: tuple[FakeEdge, str]
) -> None:
    async def scenario(pipeline: SplitPipeline) -> int:
        rb8, rb3 = pipeline.models
        cost(rb8, 10.0, 1000, 9.0)  # 20 ms
        cost(rb3, 5.0, 2000, 12.0)  # 19 ms
        model, _ = await pipeline.choose(None, "auto", Deadline.after(5.0))
        return model.key[1]

    assert with_pipeline(heads, edge[1], scenario) == 3


# (the request's stream and early_exit, the settings', what the request then does)
STREAMING = {
    "neither: unary": ((None, None), (False, None), (False, None)),
    "the setting streams": ((None, None), (True, None), (True, None)),
    "the setting's early exit streams": ((None, None), (False, 0.9), (True, 0.9)),
    "stream=false: no early exit": ((False, None), (True, 0.9), (False, None)),
    "stream=true keeps the early exit": ((True, None), (False, 0.9), (True, 0.9)),
    "early_exit=0: none": ((None, 0.0), (True, 0.9), (True, None)),
    "early_exit=0 and no stream setting": ((None, 0.0), (False, 0.9), (False, None)),
    "an early exit streams, stream=false or not": ((False, 0.5), (False, None), (True, 0.5)),
}


@pytest.mark.parametrize("asked, settings, done", STREAMING.values(), ids=STREAMING.keys())
def test_the_settings_fill_in_what_the_request_leaves_out(
    asked: tuple[bool | None, float | None], settings: tuple[bool, float | None], done: tuple[bool, float | None]
) -> None:
    options = ClassifyOptions(stream=asked[0], early_exit=asked[1]).with_defaults(*settings)
    assert (options.stream, options.early_exit) == done


def test_a_batch_crosses_in_one_frame_and_each_image_gets_its_row(
    heads: list[HeadRunner], edge: tuple[FakeEdge, str]
) -> None:
    images = [synthetic_png(seed=1), b"not an image", synthetic_png(seed=2)]

    async def scenario(pipeline: SplitPipeline) -> tuple[list[Classification], list[str], int]:
        classified = await pipeline.classify(images, ClassifyOptions(stream=False), Deadline.after(5.0))
        bodies = [Classification.build(classified.results[i]) for i in sorted(classified.results)]
        return bodies, [str(classified.errors[i]) for i in sorted(classified.errors)], classified.frame.ByteSize()

    # streaming set on the device: stream=false still sends one frame
    bodies, errors, frame_bytes = with_pipeline(heads, edge[1], scenario, stream=True)
    (frame,) = edge[0].frames
    assert list(frame.shape) == [4, 2, 4, 8, 8]  # RB8: T = 4, C' = 4 at 8 x 8; the two readable images
    assert [body.class_index for body in bodies] == [0, 1]  # image 0 in row 0, image 2 in row 1
    assert len(errors) == 1 and "not an image" in errors[0]
    # raw: each image's 4 x 4 x 8 x 8 bits, 128 bytes; the block's own spikes at 1 bit: 4 x 64 x 8 x 8 bits
    assert [body.transmitted_bytes for body in bodies] == [128, 128] and len(frame.payload) == 256
    assert {body.compression_ratio for body in bodies} == {16.0}
    assert sum(body.message_bytes for body in bodies) == frame_bytes == frame.ByteSize()
    assert {body.head_batch_images for body in bodies} == {2}


def test_a_streamed_request_stops_at_its_early_exit(heads: list[HeadRunner], edge: tuple[FakeEdge, str]) -> None:
    async def scenario(pipeline: SplitPipeline) -> Classification:
        classified = await pipeline.classify([synthetic_png()], ClassifyOptions(early_exit=0.9), Deadline.after(5.0))
        return Classification.build(classified.only())

    body = with_pipeline(heads, edge[1], scenario)
    assert edge[0].frames == [] and [step.step for step in edge[0].steps] == [0, 1]
    # step 1's answer is confident: two steps sent, and the head had worked ahead on the third
    assert (body.time_steps_sent, body.time_steps_computed, body.early_exit) == (2, 3, 0.9)
    assert body.class_index == STREAM_CLASS
    assert body.transmitted_bytes == 2 * 4 * 8 * 8 // 8  # raw: two steps of C' x H' x W' bits
