"""The device's HTTP API with no edge listening: input errors, the upload limit, 503s, probes, metrics.

Everything here is decided before or without the edge; answers that need a live edge are tested
in tests/integration.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from spikebottlenet.device.api.errors import withhold_address
from spikebottlenet.device.head_runner import HeadRunner, ModelInput
from spikebottlenet.device.http_server import WRITE_GRACE_S, DeviceServer
from spikebottlenet.device.pipeline import SplitPipeline
from spikebottlenet.device.web import DOCS_ASSETS_DIR, DOCS_ASSETS_URL
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.processes import free_port
from tests.stack import device_client, upload

UPLOAD_LIMIT = 64 * 1024
DEADLINE_S = 2.0


@pytest.fixture(scope="module")
def client(calibrated_checkpoint: Callable[..., Path]) -> Iterator[httpx.Client]:
    with device_client(
        calibrated_checkpoint(8), f"127.0.0.1:{free_port()}", max_upload_bytes=UPLOAD_LIMIT, deadline_s=DEADLINE_S
    ) as client:
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


# (the configured target, a message naming it as it reaches withhold_address: the device's wording around gRPC's
# details, the detail answered)
ADDRESSES = {
    "target": (
        "dns:///edge.internal:50051",
        "edge at dns:///edge.internal:50051: UNAVAILABLE: down",
        "the edge: UNAVAILABLE: down",
    ),
    "ipv4 peer": (
        "10.0.0.7:50051",
        "edge at 10.0.0.7:50051: UNAVAILABLE: last error: UNKNOWN: ipv4:10.0.0.7:50051: Failed to connect",
        "the edge: UNAVAILABLE: last error: UNKNOWN: <edge address>: Failed to connect",
    ),
    "ipv6 peer": (
        "ipv6:[fd00::1]:50051",
        "ipv6:[fd00::1]:50051: Connection refused",
        "<edge address>: Connection refused",
    ),
    "bare address": (
        "10.1.2.3:50051",
        "refused by 10.1.2.3:50051 and [::1]:50052",
        "refused by <edge address> and <edge address>",
    ),
    "a list": (
        "ipv4:10.0.0.1:1,10.0.0.2:1",
        "edge at ipv4:10.0.0.1:1,10.0.0.2:1 serves; 10.0.0.2:1 refused",
        "the edge serves; <edge address> refused",
    ),
    # grpcio 1.85's own wording for a name that does not resolve: host:port, without the dns:/// prefix
    "unresolved name": (
        "dns:///nonexistent-edge.invalid:50051",
        "edge at dns:///nonexistent-edge.invalid:50051: UNAVAILABLE: errors resolving "
        "nonexistent-edge.invalid:50051: [field:hostname lookup error:address lookup failed for "
        "nonexistent-edge.invalid:50051: Domain name not found]",
        "the edge: UNAVAILABLE: errors resolving <edge address>: [field:hostname lookup error:address "
        "lookup failed for <edge address>: Domain name not found]",
    ),
    # c-ares' (older gRPC): the bare host, in any case
    "bare host": (
        "dns:///Edge-7.corp:50051",
        "C-ares status is not ARES_SUCCESS qtype=A name=edge-7.corp is_balancer=0",
        "C-ares status is not ARES_SUCCESS qtype=A name=<edge address> is_balancer=0",
    ),
    # Compose's service name is a word of the messages too: "the edge" stays, the name goes everywhere else
    "compose": (
        "dns:///edge:50051",
        "split_point=auto: the edge at dns:///edge:50051 serves none; edge busy at edge:50051",
        "split_point=auto: the edge serves none; <edge address> busy at <edge address>",
    ),
    "a longer name": ("edge:50051", "edge-2:50051 and edges.internal", "edge-2:50051 and edges.internal"),
}


@pytest.mark.parametrize("target, message, detail", ADDRESSES.values(), ids=ADDRESSES.keys())
def test_error_details_withhold_the_edge_address(target: str, message: str, detail: str) -> None:
    assert withhold_address(message, target) == detail


# .invalid never resolves (RFC 6761); dns:///host:port is how Compose names the edge
UNRESOLVABLE = "dns:///nonexistent-edge.invalid:50051"


def test_an_edge_name_that_does_not_resolve_is_withheld_from_every_answer(
    calibrated_checkpoint: Callable[..., Path],
) -> None:
    with device_client(calibrated_checkpoint(8), UNRESOLVABLE) as device:
        answers = {"classify": device.post("/classify", files=upload(synthetic_png())), "readyz": device.get("/readyz")}
    for name, response in answers.items():
        assert response.status_code == 503, name
        detail = response.json()["detail"]
        # gRPC's own account of the failure is there, with every part of the name cut out of it
        assert "UNAVAILABLE" in detail and "<edge address>" in detail, (name, detail)
        assert not any(part in detail.lower() for part in ("nonexistent", "invalid", "50051")), (name, detail)


# A head of more than the limit with its end not yet in: h11 refuses to buffer more of it (a whole one that arrives in
# a single read is parsed as it is)
OVERLONG_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000
CHUNKED_UPLOAD = (
    b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
# (request, how the detail begins): h11's reason (which goes on to quote the bytes it refused), or the limit for a
# head over it
INVALID_REQUESTS = {
    "garbage": (b"NOT HTTP AT ALL\r\n\r\n", "invalid HTTP request: illegal request line"),
    "overlong head": (
        OVERLONG_HEAD,
        "invalid HTTP request: its request line and headers are over the 16384-byte limit",
    ),
    # the app has the request and reads its body: nothing has answered it yet
    "malformed chunk": (CHUNKED_UPLOAD + b"5\r\nhello\r\nzz\r\n", "invalid HTTP request: illegal chunk header"),
}


@pytest.mark.parametrize("request_bytes, detail", INVALID_REQUESTS.values(), ids=INVALID_REQUESTS.keys())
def test_an_invalid_http_request_gets_a_json_400_and_the_connection_closed(
    client: httpx.Client, request_bytes: bytes, detail: str
) -> None:
    status, headers, body = raw_exchange(client, request_bytes)
    assert (status, headers["content-type"], headers["connection"]) == (400, "application/json", "close")
    assert json.loads(body)["detail"].startswith(detail)


# (upload, status, words the detail must contain)
BAD_UPLOADS = {
    "text file": (upload(b"just some text\n", "notes.txt", "text/plain"), 400, ["not an image"]),
    "truncated PNG": (upload(synthetic_png()[:100]), 400, ["cannot decode", "truncated"]),
    "empty file": (upload(b""), 400, ["empty"]),
    "no file field": ({"image": ("image.png", synthetic_png(), "image/png")}, 422, ["file", "required"]),
}


@pytest.mark.parametrize("files, status, words", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_a_bad_upload_is_refused_with_a_json_detail(
    client: httpx.Client, files: dict, status: int, words: list[str]
) -> None:
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
    return {
        line[len(prefix) :].split('"')[0]: float(line.split()[-1])
        for line in response.text.splitlines()
        if line.startswith(prefix)
    }


def test_openapi_documents_classify(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    classify = client.get("/openapi.json").json()["paths"]["/classify"]["post"]
    assert {"200", "400", "413", "422", "502", "503"} <= set(classify["responses"])


def test_an_unexpected_failure_is_a_json_500_and_the_device_goes_on(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    head = (
        f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {10 * UPLOAD_LIMIT}\r\n\r\n"
    ).encode()
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
    calibrated_checkpoint: Callable[..., Path],
) -> None:
    keep_alive_s = 1
    with device_client(calibrated_checkpoint(8), f"127.0.0.1:{free_port()}", timeout_keep_alive_s=keep_alive_s) as idle:
        with socket.create_connection((idle.base_url.host, idle.base_url.port), timeout=30) as sock:
            start = time.monotonic()
            assert sock.recv(1) == b""  # closed, nothing said
            # not before the timeout; after it, within seconds rather than never (a loaded machine delays the timer)
            assert keep_alive_s <= time.monotonic() - start <= keep_alive_s + 10


def read_response(sock: socket.socket) -> bytes:
    """One whole response (its head and its Content-Length of body) from ``sock``."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def read_until_closed(sock: socket.socket) -> bytes:
    return b"".join(iter(lambda: sock.recv(65536), b""))


def test_a_request_pipelined_behind_another_is_timed_from_when_it_comes_up(client: httpx.Client) -> None:
    # the second request's head arrives with the first, whole, request, and never ends
    with socket.create_connection((client.base_url.host, client.base_url.port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n")
        first = read_response(sock)
        rest = read_until_closed(sock)
        closed_after = time.monotonic() - start
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 408 ") and b"request's head" in rest
    assert DEADLINE_S <= closed_after <= DEADLINE_S + 1.0, closed_after


def test_a_request_behind_an_early_answer_is_timed_from_its_own_first_byte(client: httpx.Client) -> None:
    # declared over the upload limit: answered 413 at once, while its body goes on arriving
    body = bytes(UPLOAD_LIMIT + 1)
    head = (
        f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((client.base_url.host, client.base_url.port), timeout=10) as sock:
        sock.sendall(head + body[:-1])
        first = read_response(sock)
        time.sleep(DEADLINE_S / 2)
        # the body's last byte and, in the same read, the next request's head, which never ends
        sent = time.monotonic()
        sock.sendall(body[-1:] + b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        rest = read_until_closed(sock)
        closed_after = time.monotonic() - sent
    assert first.startswith(b"HTTP/1.1 413 ")
    assert rest.startswith(b"HTTP/1.1 408 ") and b"request's head" in rest
    assert DEADLINE_S <= closed_after <= DEADLINE_S + 1.0, closed_after


def test_a_malformed_body_after_an_early_answer_closes_the_connection_without_a_second_answer(
    client: httpx.Client,
) -> None:
    chunk = f"{UPLOAD_LIMIT + 1:x}\r\n".encode() + bytes(UPLOAD_LIMIT + 1) + b"\r\n"  # past the limit: 413 at once
    with socket.create_connection((client.base_url.host, client.base_url.port), timeout=10) as sock:
        sock.sendall(CHUNKED_UPLOAD + chunk)
        first = read_response(sock)
        sock.sendall(b"zz\r\n")  # not a chunk header: h11 refuses the rest of the body
        rest = read_until_closed(sock)
    assert first.startswith(b"HTTP/1.1 413 ")
    assert rest == b""


def test_an_answer_its_client_does_not_read_is_dropped_after_its_deadline(client: httpx.Client) -> None:
    # 8 pipelined requests for a 1.5 MB file: 12 MB of answers, more than a Linux socket's send buffer grows to by
    # default (4 MiB) with this side's buffers: some answer is left in the device's own hands, unwritten
    asset = DOCS_ASSETS_DIR / "swagger-ui-bundle.js"
    requests = 8
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window it offers
        sock.settimeout(10)
        sock.connect((client.base_url.host, client.base_url.port))
        sock.sendall(f"GET {DOCS_ASSETS_URL}/{asset.name} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * requests)
        time.sleep(DEADLINE_S + WRITE_GRACE_S + 1.0)  # reading nothing
        received = 0
        try:
            while chunk := sock.recv(65536):
                received += len(chunk)
        except ConnectionResetError:  # dropped: what had reached this side before the reset, then the reset
            pass
    assert received < requests * asset.stat().st_size
    assert client.get("/healthz").status_code == 200


def test_a_full_head_queue_refuses_only_its_own_heads_requests(
    calibrated_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    held = synthetic_png(seed=7)  # its decode waits until released: its request stays on its way to the head
    decoding, release = threading.Event(), threading.Event()
    load = ModelInput.load

    def load_held(image: bytes, config: ModelConfig, max_decoded_bytes: int) -> ModelInput:
        if image == held:
            decoding.set()
            release.wait(10)
        return load(image, config, max_decoded_bytes)

    monkeypatch.setattr(ModelInput, "load", staticmethod(load_held))
    heads = [calibrated_checkpoint(8), calibrated_checkpoint(3)]
    with device_client(heads, f"127.0.0.1:{free_port()}", head_queue_limit=1) as device:

        def classify(image: bytes, **params: str) -> httpx.Response:
            return httpx.post(f"{device.base_url}/classify", params=params, files=upload(image), timeout=30)

        def while_held(**params: str) -> dict[str, str]:
            """The details answered to other requests while one for ``params`` is held in decoding."""
            decoding.clear()
            release.clear()
            with ThreadPoolExecutor(1) as pool:
                holding = pool.submit(classify, held, **params)
                assert decoding.wait(10)
                details = {
                    name: classify(synthetic_png(), **other).json()["detail"]
                    for name, other in {"rb8": {"split_point": "8"}, "rb3": {"split_point": "3"}}.items()
                }
                release.set()
                assert holding.result().status_code == 503  # it went on to the edge (none listening)
            return details

        # one request on its way to RB8's queue fills it (limit 1): RB8 refuses, RB3 takes its own (the edge, down,
        # then answers 503 UNAVAILABLE)
        unstreamed = while_held(split_point="8")
        assert unstreamed["rb8"].startswith("device is busy: 1 requests are waiting for the head")
        assert "UNAVAILABLE" in unstreamed["rb3"]
        # a streamed request never joins the queue: decoding, it holds no place in it
        streamed = while_held(split_point="8", stream="true")
        assert "UNAVAILABLE" in streamed["rb8"] and "UNAVAILABLE" in streamed["rb3"]


def _pipelines_the_collector_walks() -> list[SplitPipeline]:
    """The device pipelines that a full garbage collection walks now (frozen ones it does not)."""
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is SplitPipeline]


@pytest.mark.parametrize(
    "server, frozen", [(uvicorn.Server, False), (DeviceServer, True)], ids=["in-process", "sbn device's"]
)
def test_only_sbn_devices_own_server_takes_what_the_device_built_out_of_the_collector(
    calibrated_checkpoint: Callable[..., Path], server: type[uvicorn.Server], frozen: bool
) -> None:
    before = _pipelines_the_collector_walks()  # other tests' devices (held here: none is collected meanwhile)
    try:
        with device_client(calibrated_checkpoint(8), f"127.0.0.1:{free_port()}", server=server) as device:
            assert device.get("/healthz").status_code == 200  # served after start-up, freezing included, has ended
            walked = [p for p in _pipelines_the_collector_walks() if not any(p is b for b in before)]
    finally:
        gc.unfreeze()  # whatever was frozen back to the collector, for the tests after this one
    # the pipeline the app's lifespan built: walked by every full collection, unless frozen once the server started
    assert len(walked) == (0 if frozen else 1)
