"""POST /classify/batch and the upload-field refusals, decided without an edge (nothing listens at its address).

The answers that need a live edge (logits, the one frame on the wire) are in tests/integration/test_batch.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from spikebottlenet.device.classification import even_shares
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.preprocess import MAX_DECODED_BYTES
from spikebottlenet.shared.processes import free_port
from tests.shared.test_preprocess import png_claiming
from tests.stack import device_client, upload

MAX_BATCH = 3


@pytest.fixture(scope="module")
def client(calibrated_checkpoint: Callable[..., Path]) -> Iterator[httpx.Client]:
    with device_client(
        calibrated_checkpoint(8), f"127.0.0.1:{free_port()}", max_batch=MAX_BATCH, deadline_s=2.0
    ) as client:
        yield client


def files(*images: bytes, field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"image{i}.png", image, "image/png")) for i, image in enumerate(images)]


def test_more_files_than_max_batch_is_413_naming_the_limit(client: httpx.Client) -> None:
    response = client.post("/classify/batch", files=files(*[synthetic_png(seed=i) for i in range(MAX_BATCH + 1)]))
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert f"{MAX_BATCH + 1} files" in detail and f"at most {MAX_BATCH}" in detail


def test_a_batch_of_only_bad_images_is_200_with_an_error_per_entry_and_no_frame(client: httpx.Client) -> None:
    # No edge is listening: had a frame been sent, this would be a 503.
    response = client.post("/classify/batch", files=files(b"", b"not an image"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(e["index"], e["filename"]) for e in body["results"]] == [(0, "image0.png"), (1, "image1.png")]
    assert "empty" in body["results"][0]["error"] and "not an image" in body["results"][1]["error"]
    assert (body["batch"]["images"], body["batch"]["classified"], body["batch"]["failed"]) == (2, 0, 2)
    assert (body["batch"]["frames"], body["batch"]["transmitted_bytes"]) == (0, 0)
    assert "frame_shape" not in body["batch"]


def test_an_image_over_the_decoded_size_budget_fails_only_its_entry(client: httpx.Client) -> None:
    response = client.post("/classify/batch", files=files(png_claiming(8_000, 8_000), b""))
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert "8000x8000 pixels" in first["error"] and f"at most {MAX_DECODED_BYTES:,} decoded bytes" in first["error"]
    assert "empty" in second["error"]


@pytest.mark.parametrize(
    "params, named",
    [
        ({"stream": "true"}, "stream"),
        ({"early_exit": "0.9"}, "early_exit"),
        ({"stream": "false", "early_exit": "0.5"}, "stream and early_exit"),
    ],
    ids=["stream", "early_exit", "both"],
)
def test_stream_or_early_exit_on_the_batch_endpoint_is_422_naming_it(
    client: httpx.Client, params: dict[str, str], named: str
) -> None:
    response = client.post("/classify/batch", params=params, files=files(synthetic_png()))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith(f"{named}: POST /classify/batch") and "POST /classify" in detail


def test_a_batch_with_a_readable_image_goes_to_the_edge(client: httpx.Client) -> None:
    response = client.post("/classify/batch", files=files(b"", synthetic_png()))
    assert response.status_code == 503 and "UNAVAILABLE" in response.json()["detail"]


def test_two_file_fields_on_classify_are_422_naming_the_batch_endpoint(client: httpx.Client) -> None:
    response = client.post("/classify", files=files(synthetic_png(seed=1), synthetic_png(seed=2), field="file"))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "2 file fields" in detail and "/classify/batch" in detail


@pytest.mark.parametrize("field", ["image", "files"])
def test_a_wrong_field_name_on_classify_is_422_naming_file(client: httpx.Client, field: str) -> None:
    response = client.post("/classify", files=files(synthetic_png(), field=field))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "named `file`" in detail and "required" in detail and f"`{field}`" in detail


def test_a_text_value_for_file_is_422_asking_for_a_file(client: httpx.Client) -> None:
    response = client.post("/classify", data={"file": "digit.png"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("`file` must be a file upload")


def test_a_wrong_field_name_on_the_batch_endpoint_is_422_naming_files(client: httpx.Client) -> None:
    response = client.post("/classify/batch", files=files(synthetic_png(), field="file"))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "named `files`" in detail and "`file`" in detail


def test_a_request_without_a_body_names_the_field(client: httpx.Client) -> None:
    detail = client.post("/classify").json()["detail"]
    assert "named `file`" in detail and "no multipart form fields" in detail


def test_the_batch_endpoint_needs_the_api_key_when_one_is_set(calibrated_checkpoint: Callable[..., Path]) -> None:
    with device_client(calibrated_checkpoint(8), f"127.0.0.1:{free_port()}", api_key="s3cret") as client:
        refused = client.post("/classify/batch", files=files(b""))
        allowed = client.post("/classify/batch", files=files(b""), headers={"X-API-Key": "s3cret"})
    assert refused.status_code == 401 and "API key" in refused.json()["detail"]
    assert allowed.status_code == 200


def test_openapi_documents_the_batch_endpoint(client: httpx.Client) -> None:
    batch = client.get("/openapi.json").json()["paths"]["/classify/batch"]["post"]
    assert {"200", "413", "422", "502", "503"} <= set(batch["responses"])


def test_one_file_field_still_classifies_as_before(client: httpx.Client) -> None:
    # Reaches the edge (so 503 here), i.e. passes the one-file check.
    assert client.post("/classify", files=upload(synthetic_png())).status_code == 503


@pytest.mark.parametrize("total, parts, shares", [(384, 3, [128] * 3), (10, 4, [3, 3, 2, 2]), (1, 3, [1, 0, 0])])
def test_even_shares_add_up_to_the_total(total: int, parts: int, shares: list[int]) -> None:
    assert even_shares(total, parts) == shares and sum(shares) == total


def test_openapi_offers_the_raw_image_body_beside_the_form(client: httpx.Client) -> None:
    body = client.get("/openapi.json").json()["paths"]["/classify"]["post"]["requestBody"]
    assert body["required"] is True
    assert {"multipart/form-data", "image/*"} <= body["content"].keys()
    assert body["content"]["image/*"]["schema"] == {"type": "string", "format": "binary"}
