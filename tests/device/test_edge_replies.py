"""What the device answers when the edge fails or sends a reply that does not fit the frame: a fake edge,
a real gRPC server on 127.0.0.1, behind a real device app over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import device_client, upload

Reply = Callable[[pb.SpikeFrame], pb.Logits]


def well_formed(frame: pb.SpikeFrame) -> pb.Logits:
    """The reply a correct edge would send for ``frame``: B rows of 10 logits, its id and model."""
    batch = frame.shape[1]
    return pb.Logits(
        request_id=frame.request_id,
        batch_size=batch,
        num_classes=10,
        values=[0.0] * (10 * batch),
        model_fingerprint=frame.model_fingerprint,
        timing=pb.EdgeTiming(batch_images=batch),
    )


class FakeEdge(pb_grpc.SplitInferenceServicer):
    def __init__(self) -> None:
        self.answer: Reply = well_formed
        self.abort: tuple[grpc.StatusCode, str] | None = None

    def Infer(self, request: pb.SpikeFrame, context: grpc.ServicerContext) -> pb.Logits:
        if self.abort is not None:
            context.abort(*self.abort)
        return self.answer(request)


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
def client(fake_edge: tuple[FakeEdge, str], calibrated_checkpoint: Callable[..., Path]) -> Iterator[httpx.Client]:
    with device_client(calibrated_checkpoint(8), fake_edge[1]) as client:
        yield client


@pytest.fixture
def fake(fake_edge: tuple[FakeEdge, str]) -> Iterator[FakeEdge]:
    fake = fake_edge[0]
    yield fake
    fake.answer, fake.abort = well_formed, None


def altered(**fields: object) -> Reply:
    def answer(frame: pb.SpikeFrame) -> pb.Logits:
        reply = well_formed(frame)
        for name, value in fields.items():
            if name == "values":
                del reply.values[:]
                reply.values.extend(value)  # type: ignore[arg-type]
            else:
                setattr(reply, name, value)
        return reply

    return answer


def test_a_well_formed_reply_is_answered(client: httpx.Client, fake: FakeEdge) -> None:
    response = client.post("/classify", files=upload(synthetic_png()))
    assert response.status_code == 200 and response.json()["edge_batch_images"] == 1


MALFORMED = {  # reply fields -> words the 502's detail must carry
    "no rows": (dict(batch_size=0, values=[]), ["batch size 0", "needs 1"]),
    "another request's id": (dict(request_id="someone-else"), ["request id 'someone-else'"]),
    "another model": (dict(model_fingerprint="f" * 64), ["model fingerprint", "f" * 64]),
    "wrong class count": (dict(num_classes=9, values=[0.0] * 9), ["class count 9", "needs 10"]),
    "too few logits": (dict(values=[0.0] * 7), ["number of logits 7", "needs 10"]),
}


@pytest.mark.parametrize("fields, words", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_reply_that_does_not_fit_the_frame_is_a_502_naming_the_mismatch(
    client: httpx.Client, fake: FakeEdge, fake_edge: tuple[FakeEdge, str], fields: dict, words: list[str]
) -> None:
    fake.answer = altered(**fields)
    response = client.post("/classify", files=upload(synthetic_png()))
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert fake_edge[1] not in detail and all(word in detail for word in words), detail  # the address: logged only


def test_a_batch_reply_with_too_few_rows_is_a_502(client: httpx.Client, fake: FakeEdge) -> None:
    fake.answer = lambda frame: well_formed(
        pb.SpikeFrame(request_id=frame.request_id, shape=[4, 1, 4, 8, 8], model_fingerprint=frame.model_fingerprint)
    )
    files = [("files", ("a.png", synthetic_png(1), "image/png")), ("files", ("b.png", synthetic_png(2), "image/png"))]
    response = client.post("/classify/batch", files=files)
    assert response.status_code == 502 and "batch size 1" in response.json()["detail"]


# gRPC status from the edge -> the device's HTTP status, and whether the client is told when to retry
STATUSES = {
    grpc.StatusCode.UNAVAILABLE: (503, True),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (503, True),
    grpc.StatusCode.CANCELLED: (503, True),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, False),
    grpc.StatusCode.INVALID_ARGUMENT: (502, False),
    grpc.StatusCode.FAILED_PRECONDITION: (502, False),
    grpc.StatusCode.UNKNOWN: (502, False),
    grpc.StatusCode.INTERNAL: (502, False),
}


@pytest.mark.parametrize("code, expected", STATUSES.items(), ids=[code.name for code in STATUSES])
def test_each_grpc_failure_maps_to_its_http_status_with_the_edges_message(
    client: httpx.Client,
    fake: FakeEdge,
    fake_edge: tuple[FakeEdge, str],
    code: grpc.StatusCode,
    expected: tuple[int, bool],
) -> None:
    fake.abort = (code, f"the edge says {code.name.lower()}")
    response = client.post("/classify", files=upload(synthetic_png()))
    status, retry = expected
    assert response.status_code == status
    detail = response.json()["detail"]
    assert fake_edge[1] not in detail and code.name in detail and f"the edge says {code.name.lower()}" in detail
    assert ("retry-after" in response.headers) == retry
