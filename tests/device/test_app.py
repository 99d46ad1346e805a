"""The device's HTTP API with no edge listening: input errors, the upload limit, 503s, probes, metrics.

Everything here is decided before or without the edge; answers that need a live edge are tested
in tests/integration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench.e2e import synthetic_png
from device.head_runner import HeadRunner
from sbn.up import free_port
from tests.stack import device_client, upload

UPLOAD_LIMIT = 64 * 1024
DEADLINE_S = 2.0


@pytest.fixture(scope="module")
def client(calibrated_checkpoint: Callable[..., Path]) -> Iterator[httpx.Client]:
    with device_client(calibrated_checkpoint(8), f"127.0.0.1:{free_port()}", max_upload_bytes=UPLOAD_LIMIT,
                       deadline_s=DEADLINE_S) as client:
        yield client


def test_healthz_says_alive(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})


def test_readyz_is_503_while_the_edge_is_down(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("not ready: edge at 127.0.0.1:")
    assert "UNAVAILABLE" in response.json()["detail"]


def test_classify_is_503_within_the_deadline_while_the_edge_is_down(client: httpx.Client) -> None:
    start = time.monotonic()
    response = client.post("/classify", files=upload(synthetic_png()))
    assert time.monotonic() - start < DEADLINE_S
    assert response.status_code == 503
    assert "UNAVAILABLE" in response.json()["detail"]


# (upload, status, words the detail must contain)
BAD_UPLOADS = {
    "text file": (upload(b"just some text\n", "notes.txt", "text/plain"), 400, ["not an image"]),
    "truncated PNG": (upload(synthetic_png()[:100]), 400, ["cannot decode", "truncated"]),
    "empty file": (upload(b""), 400, ["empty"]),
    "no file field": ({"image": ("image.png", synthetic_png(), "image/png")}, 422, ["file", "required"]),
}


@pytest.mark.parametrize("files, status, words", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_a_bad_upload_is_refused_with_a_json_detail(client: httpx.Client, files: dict, status: int,
                                                    words: list[str]) -> None:
    response = client.post("/classify", files=files)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail.lower()


def test_a_request_without_a_body_is_422(client: httpx.Client) -> None:
    response = client.post("/classify")
    assert response.status_code == 422 and "file" in response.json()["detail"]


def test_an_upload_over_the_limit_is_413(client: httpx.Client) -> None:
    response = client.post("/classify", files=upload(b"\x89PNG" + bytes(UPLOAD_LIMIT)))
    assert response.status_code == 413
    assert f"{UPLOAD_LIMIT}-byte upload limit" in response.json()["detail"]


def test_a_chunked_upload_is_cut_off_at_the_limit(client: httpx.Client) -> None:
    # No Content-Length: the limit must hold while the body streams in.
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        for _ in range(8):
            yield bytes(UPLOAD_LIMIT // 4)
        yield b"\r\n--b--\r\n"

    response = client.post("/classify", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert f"{UPLOAD_LIMIT}-byte upload limit" in response.json()["detail"]


def test_metrics_count_classify_responses_by_status(client: httpx.Client) -> None:
    before = _requests_by_status(client)
    client.post("/classify", files=upload(b"not an image"))
    client.post("/classify", files=upload(bytes(UPLOAD_LIMIT + 1)))
    after = _requests_by_status(client)
    assert after.get("400", 0) - before.get("400", 0) == 1
    assert after.get("413", 0) - before.get("413", 0) == 1


def _requests_by_status(client: httpx.Client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    prefix = 'sbn_device_classify_requests_total{status="'
    return {line[len(prefix):].split('"')[0]: float(line.split()[-1])
            for line in response.text.splitlines() if line.startswith(prefix)}


def test_openapi_documents_classify(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    classify = client.get("/openapi.json").json()["paths"]["/classify"]["post"]
    assert {"200", "400", "413", "422", "502", "503"} <= set(classify["responses"])


def test_an_unexpected_failure_is_a_json_500_and_the_device_goes_on(client: httpx.Client,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: HeadRunner, jobs: list[list[bytes]]) -> None:
        raise RuntimeError("simulated bug")

    # uvicorn closes the connection of a request that raised: use one of our own, not the module's
    with httpx.Client(base_url=client.base_url, timeout=30) as own:
        with monkeypatch.context() as patch:
            patch.setattr(HeadRunner, "run_jobs", broken)
            response = own.post("/classify", files=upload(synthetic_png()))
        assert response.status_code == 500 and "internal error" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200
    assert client.post("/classify", files=upload(b"still here")).status_code == 400
