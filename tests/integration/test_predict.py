"""``sbn predict``: the monolithic reference path answers with the fields of /classify plus the logits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.sbn.cli import main
from tests.stack import EdgeProcess, device_client, monolithic_logits, upload


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "image.png"
    path.write_bytes(synthetic_png(seed=7))
    return path


def test_json_output_has_the_classify_fields_and_the_monolithic_logits(
    image_file: Path,
    edges: dict[int, EdgeProcess],
    calibrated_checkpoint: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint = calibrated_checkpoint(8)
    assert main(["predict", str(image_file), "--checkpoint", str(checkpoint), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)

    reference = monolithic_logits(checkpoint, image_file.read_bytes())
    assert predicted["class_index"] == int(reference.argmax())
    torch.testing.assert_close(torch.tensor(predicted["logits"]), reference, rtol=0, atol=1e-5)

    with device_client(checkpoint, edges[8].address) as client:
        classified = client.post("/classify", params={"logits": "true"}, files=upload(image_file.read_bytes())).json()
    split_path_only = {"head_batch_images", "edge_batch_images", "link_damage", "edge_replica"}
    assert set(predicted) | split_path_only == set(classified)
    assert set(predicted["latency_ms"]) == {"device", "total"}
    # the same head on the same image: identical spikes, so identical bytes and energy
    for same in (
        "label",
        "arch",
        "split_point",
        "split_point_name",
        "spike_shape",
        "codec",
        "transmitted_bytes",
        "message_bytes",
        "compression_ratio",
        "model",
    ):
        assert predicted[same] == classified[same], same
    radio = {"transmit_mj", "device_total_mj"}  # the split path sends the frame: its radio energy on top
    assert predicted["energy"] == {k: v for k, v in classified["energy"].items() if k not in radio}
    assert (predicted["arch"], predicted["split_point"], predicted["split_point_name"]) == (
        "spiking_resnet50",
        8,
        "RB8",
    )
    assert [c["label"] for c in predicted["top5"]] == [c["label"] for c in classified["top5"]]


def test_text_output_names_every_field(
    image_file: Path, calibrated_checkpoint: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(image_file), "--checkpoint", str(calibrated_checkpoint(8)), "--codec", "sparse"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {
        "label",
        "probability",
        "top5",
        "codec",
        "transmitted_bytes",
        "message_bytes",
        "compression_ratio",
        "energy.device_45nm_mj",
        "energy.syops",
        "latency_ms.device",
        "latency_ms.total",
        "model.fingerprint",
        "model.note",
        "logits",
    } <= names


@pytest.mark.parametrize("image, words", [(b"plain text", "not an image"), (None, "No such file")])
def test_a_bad_image_is_reported_without_a_traceback(
    tmp_path: Path,
    calibrated_checkpoint: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    image: bytes | None,
    words: str,
) -> None:
    path = tmp_path / "input.png"
    if image is not None:
        path.write_bytes(image)
    assert main(["predict", str(path), "--checkpoint", str(calibrated_checkpoint(8))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sbn predict: ") and words in err
