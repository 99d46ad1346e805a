"""``DeviceClient`` and ``sbn classify`` against a real ``sbn device`` process (API key on) and a real edge."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.sbn.cli import main
from spikebottlenet.sbn.client import DEVICE_URL_ENV, DeviceClient, DeviceError, DeviceUnreachable
from spikebottlenet.shared.processes import free_port
from tests.stack import EdgeProcess, device_process, upload

API_KEY = "client-test-key"


@pytest.fixture(scope="module")
def url(calibrated_checkpoint: Callable[..., Path], edges: dict[int, EdgeProcess]) -> Iterator[str]:
    with device_process(calibrated_checkpoint(8), edges[8].address, "--api-key", API_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / f"digit{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        path.write_bytes(synthetic_png(seed=20 + i))
    return paths


def test_classify_gives_the_device_answer(url: str, images: list[Path]) -> None:
    with DeviceClient(url, api_key=API_KEY) as device:
        from_path = device.classify(images[0], logits=True)
        from_bytes = device.classify(images[0].read_bytes())
    direct = httpx.post(
        f"{url}/classify",
        params={"logits": "true"},
        files=upload(images[0].read_bytes()),
        headers={"X-API-Key": API_KEY},
        timeout=30,
    ).json()
    torch.testing.assert_close(torch.tensor(from_path["logits"]), torch.tensor(direct["logits"]), rtol=0, atol=1e-5)
    assert from_path["label"] == from_bytes["label"] == direct["label"] and "logits" not in from_bytes


def test_classify_batch_gives_one_entry_per_image(url: str, images: list[Path]) -> None:
    with DeviceClient(url, api_key=API_KEY) as device:
        answer = device.classify_batch([images[0], b"not an image", images[1].read_bytes()], logits=True)
        single = device.classify(images[1], logits=True)
    first, bad, third = answer["results"]
    assert (first["filename"], bad["filename"], third["filename"]) == ("digit0.png", "image", "image")
    assert "not an image" in bad["error"] and "label" not in bad
    torch.testing.assert_close(torch.tensor(third["logits"]), torch.tensor(single["logits"]), rtol=0, atol=1e-5)
    assert (answer["batch"]["frames"], answer["batch"]["classified"]) == (1, 2)


@pytest.mark.parametrize(
    "key, image, status, words",
    [
        (API_KEY, b"not an image", 400, ["not an image"]),
        ("wrong-key", synthetic_png(), 401, ["wrong", "API key"]),
        (None, synthetic_png(), 401, ["no", "API key"]),
    ],
    ids=["bad image", "wrong key", "no key"],
)
def test_an_http_error_is_a_device_error_with_status_and_detail(
    url: str, key: str | None, image: bytes, status: int, words: list[str]
) -> None:
    with DeviceClient(url, api_key=key) as device, pytest.raises(DeviceError) as caught:
        device.classify(image)
    assert caught.value.status_code == status
    for word in words:
        assert word in caught.value.detail
    assert f"HTTP {status}" in str(caught.value) and caught.value.url == f"{url}/classify"


def test_no_device_listening_is_device_unreachable() -> None:
    with (
        DeviceClient(f"http://127.0.0.1:{free_port()}", timeout_s=5) as device,
        pytest.raises(DeviceUnreachable) as caught,
    ):
        device.classify(synthetic_png())
    assert caught.value.status_code is None and "no answer" in caught.value.detail


def test_sbn_classify_prints_a_table(url: str, images: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", str(images[0]), "--url", url, "--api-key", API_KEY]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["file", "label", "probability", "bytes", "latency", "ms"]
    file, label, probability, transmitted, latency = re.split(r"\s{2,}", row)  # a label may hold a space
    assert (file, transmitted) == (str(images[0]), "128")  # RB8: 4 x 4 x 8 x 8 bits
    assert label and 0 < float(probability) <= 1 and float(latency) > 0


def test_sbn_classify_sends_several_images_as_one_batch(
    url: str, images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", *map(str, images), "--url", url, "--api-key", API_KEY, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [entry["filename"] for entry in answer["results"]] == [path.name for path in images]
    assert (answer["batch"]["frames"], answer["batch"]["frame_shape"][1]) == (1, 3)

    assert main(["classify", *map(str, images), "--url", url, "--api-key", API_KEY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[-1].startswith("3 of 3 images classified in 1 frame: 384 bytes of spikes")


def test_sbn_classify_exits_1_on_errors(
    url: str, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n")
    assert main(["classify", str(images[0]), str(bad), "--url", url, "--api-key", API_KEY]) == 1
    assert "error: not an image" in capsys.readouterr().out  # the good image is still classified and shown
    assert main(["classify", str(images[0]), "--url", url]) == 1  # no key
    assert "HTTP 401" in capsys.readouterr().err
    assert main(["classify", str(tmp_path / "missing.png"), "--url", url]) == 1
    assert "missing.png" in capsys.readouterr().err


def test_sbn_classify_finds_the_device_through_its_variable_and_a_flag_wins(
    url: str, images: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fingerprint = httpx.get(f"{url}/readyz", timeout=10).json()["model_fingerprint"]  # this device's model
    monkeypatch.setenv(DEVICE_URL_ENV, url)
    assert main(["classify", str(images[0]), "--api-key", API_KEY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["fingerprint"] == fingerprint

    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(DEVICE_URL_ENV, nowhere)
    assert main(["classify", str(images[0]), "--api-key", API_KEY, "--json", "--url", url]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["fingerprint"] == fingerprint
    assert main(["classify", str(images[0]), "--api-key", API_KEY]) == 1  # the variable's URL is the one tried
    error = capsys.readouterr().err
    assert f"{nowhere}/classify: no answer" in error and DEVICE_URL_ENV in error
