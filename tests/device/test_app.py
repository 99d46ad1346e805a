"""The device's HTTP API with no edge listening: input errors, the upload limit, 503s, probes, metrics.

Everything here is decided before or without the edge; answers that need a live edge are tested
in tests/integration.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench.e2e import synthetic_png
from device.app import withhold_address
from device.head_runner import HeadRunner, ModelInput
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


def test_readyz_is_503_while_the_edge_is_down_and_keeps_its_address_to_itself(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith("not ready: the edge: UNAVAILABLE") and "127.0.0.1" not in detail


def test_classify_is_503_within_the_deadline_while_the_edge_is_down(client: httpx.Client) -> None:
    start = time.monotonic()
    response = client.post("/classify", files=upload(synthetic_png()))
    assert time.monotonic() - start < DEADLINE_S
    assert response.status_code == 503
    assert "UNAVAILABLE" in response.json()["detail"] and "127.0.0.1" not in response.json()["detail"]


# what gRPC writes in its details, and the configured target, as they reach withhold_address
ADDRESSES = {
    "target": ("edge at dns:///edge.internal:50051: UNAVAILABLE: down", "the edge: UNAVAILABLE: down"),
    "ipv4 peer": ("edge at 10.0.0.7:50051: UNAVAILABLE: last error: UNKNOWN: ipv4:10.0.0.7:50051: Failed to connect",
                  "the edge: UNAVAILABLE: last error: UNKNOWN: <edge address>: Failed to connect"),
    "ipv6 peer": ("ipv6:[fd00::1]:50051: Connection refused", "<edge address>: Connection refused"),
    "bare address": ("refused by 10.1.2.3:50051 and [::1]:50052", "refused by <edge address> and <edge address>"),
    "a list": ("edge at ipv4:10.0.0.1:1,10.0.0.2:1 serves", "the edge serves"),
}


@pytest.mark.parametrize("message, detail", ADDRESSES.values(), ids=ADDRESSES.keys())
def test_error_details_withhold_the_edge_address(message: str, detail: str) -> None:
    target = message.removeprefix("edge at ").split(": ")[0].split(" serves")[0]
    assert withhold_address(message, target) == detail


# A head of more than the limit with its end not yet in: h11 refuses to buffer more of it (a whole one that arrives in
# a single read is parsed as it is)
OVERLONG_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000


@pytest.mark.parametrize("request_bytes", [b"NOT HTTP AT ALL\r\n\r\n", OVERLONG_HEAD], ids=["garbage", "overlong head"])
def test_an_invalid_http_request_gets_a_json_400_and_the_connection_closed(client: httpx.Client,
                                                                           request_bytes: bytes) -> None:
    status, headers, body = raw_exchange(client, request_bytes)
    assert (status, headers["content-type"], headers["connection"]) == (400, "application/json", "close")
    assert "invalid HTTP request" in json.loads(body)["detail"] and "16384-byte limit" in json.loads(body)["detail"]


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


def test_the_decoded_size_budget_is_a_setting(calibrated_checkpoint: Callable[..., Path]) -> None:
    rgb_32 = 32 * 32 * 3  # decoded bytes of the 32 x 32 RGB upload
    with device_client(calibrated_checkpoint(8), f"127.0.0.1:{free_port()}", max_decoded_bytes=rgb_32 - 1) as small:
        response = small.post("/classify", files=upload(synthetic_png(size=(32, 32))))
    assert response.status_code == 413
    assert f"32x32 pixels of mode RGB: {rgb_32:,} bytes decoded; at most {rgb_32 - 1:,}" in response.json()["detail"]


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
    def broken(self: HeadRunner, jobs: list[dict[int, ModelInput]]) -> None:
        raise RuntimeError("simulated bug")

    # uvicorn closes the connection of a request that raised: use one of our own, not the module's
    with httpx.Client(base_url=client.base_url, timeout=30) as own:
        with monkeypatch.context() as patch:
            patch.setattr(HeadRunner, "run_jobs", broken)
            response = own.post("/classify", files=upload(synthetic_png()))
        assert response.status_code == 500 and "internal error" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200
    assert client.post("/classify", files=upload(b"still here")).status_code == 400


def raw_exchange(client: httpx.Client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """``request``'s bytes written to the device as they are; (status, lower-case headers, body) read back until the
    device closes the connection."""
    with socket.create_connection((client.base_url.host, client.base_url.port), timeout=10) as sock:
        sock.sendall(request)
        received = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), dict(line.lower().split(": ", 1) for line in lines), body


def test_an_answered_request_whose_body_still_trickles_is_closed_at_its_deadline(client: httpx.Client) -> None:
    # declared over the upload limit: refused at once (413), yet its client goes on sending, a byte at a time
    head = (f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {10 * UPLOAD_LIMIT}\r\n\r\n").encode()
    with socket.create_connection((client.base_url.host, client.base_url.port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(head)
        sock.settimeout(0.25)
        received = b""
        while time.monotonic() - start < 3 * DEADLINE_S:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.sendall(b"x")
                continue
            if not chunk:
                break
            received += chunk
        closed_after = time.monotonic() - start
    assert received.startswith(b"HTTP/1.1 413 ")
    assert DEADLINE_S <= closed_after <= DEADLINE_S + 1.0, closed_after


def test_a_connection_that_sends_nothing_is_closed_after_the_keep_alive_timeout(
        calibrated_checkpoint: Callable[..., Path]) -> None:
    keep_alive_s = 1
    with device_client(calibrated_checkpoint(8), f"127.0.0.1:{free_port()}", timeout_keep_alive_s=keep_alive_s) as idle:
        with socket.create_connection((idle.base_url.host, idle.base_url.port), timeout=10) as sock:
            start = time.monotonic()
            assert sock.recv(1) == b""  # closed, nothing said
            assert keep_alive_s <= time.monotonic() - start <= keep_alive_s + 1.0
