"""The device's API key: /classify and /metrics need it in X-API-Key, the probes and the docs do not;
a request without it is refused before its body is read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from spikebottlenet.sbn.bench import synthetic_png
from tests.stack import EdgeProcess, device_client, upload

KEY = "s3cret-key-0123456789"
UPLOAD_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def client(checkpoint: Path, edge: EdgeProcess) -> Iterator[httpx.Client]:
    with device_client(checkpoint, edge.address, api_key=KEY, max_upload_bytes=UPLOAD_LIMIT) as client:
        yield client


def test_the_right_key_classifies(client: httpx.Client) -> None:
    response = client.post("/classify", files=upload(synthetic_png()), headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text


# header value as bytes (sent as is), words the detail must contain
WRONG_KEYS = {
    "no header": (None, "no API key"),
    "empty": (b"", "wrong API key"),
    "a prefix of the key": (KEY[:-1].encode(), "wrong API key"),
    "the key and more": (KEY.encode() + b"x", "wrong API key"),
    "another case": (KEY.upper().encode(), "wrong API key"),
    "non-ASCII bytes": ("schlüssel-ключ".encode(), "wrong API key"),
}


@pytest.mark.parametrize("key, words", WRONG_KEYS.values(), ids=WRONG_KEYS.keys())
def test_a_missing_or_wrong_key_is_a_json_401(client: httpx.Client, key: bytes | None, words: str) -> None:
    headers = {} if key is None else {b"X-API-Key": key}
    for response in (
        client.post("/classify", files=upload(synthetic_png()), headers=headers),
        client.get("/metrics", headers=headers),
    ):
        assert response.status_code == 401
        assert words in response.json()["detail"] and "X-API-Key" in response.json()["detail"]
        assert response.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'


def test_without_the_key_the_body_is_not_read(client: httpx.Client) -> None:
    # over the upload limit, but refused for the key first: 401, not 413
    response = client.post("/classify", files=upload(bytes(UPLOAD_LIMIT + 1)))
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json"])
def test_probes_and_docs_stay_open(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


def test_metrics_count_the_401s(client: httpx.Client) -> None:
    def unauthorized() -> float:
        metrics = client.get("/metrics", headers={"X-API-Key": KEY}).text
        line = next(
            (
                line
                for line in metrics.splitlines()
                if line.startswith('sbn_device_classify_requests_total{status="401"}')
            ),
            "_ 0",
        )
        return float(line.split()[-1])

    before = unauthorized()
    client.post("/classify", files=upload(synthetic_png()))
    assert unauthorized() == before + 1


def test_readyz_names_the_edge_only_to_a_request_with_the_key(client: httpx.Client, edge: EdgeProcess) -> None:
    keyless = client.get("/readyz")
    assert keyless.status_code == 200 and edge.address not in keyless.text
    assert (keyless.json()["edge"], keyless.json()["edge_addresses"]) == (None, None)
    keyed = client.get("/readyz", headers={"X-API-Key": KEY}).json()
    assert (keyed["edge"], keyed["edge_addresses"]) == (edge.address, [edge.address])
