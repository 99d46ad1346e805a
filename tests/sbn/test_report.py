"""``sbn report``: the paper preset's numbers, and measurement on a checkpoint's head."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spikebottlenet.sbn.cli import main
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.preprocess import load_image

TABLE_1_BYTES = [8192, 4096, 4096, 4096, 4096, 4096, 4096, 2048, 1024, 1024, 1024, 1024, 2048, 256, 512, 64]
# BottleNet++ (the paper's ANN baseline) at RB1..RB16, from the same Table 1
BOTTLENETPP_BYTES = [8192, 16384, 16384, 8192, 8192, 8192, 8192, 4096, 4096, 4096, 4096, 4096, 4096, 1024, 1024, 128]
KEYS = [
    "arch",
    "split_point",
    "split_point_name",
    "time_steps",
    "spike_shape",
    "transmitted_bytes",
    "compression_ratio",
    "float32_feature_bytes",
    "flops",
    "ann_baseline_45nm_mj",
    "bottlenetpp_bytes",
]
MEASURED_KEYS = ["firing_rate", "syops", "device_45nm_mj", "device_rolls_mj"]
LINK_KEYS = ["link", "transmit_ms", "transmit_mj", "device_total_mj"]


def report(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def paper_rows() -> list[dict]:
    stdout = io.StringIO()  # capsys is per test; this output is shared by the module's tests
    with contextlib.redirect_stdout(stdout):
        assert main(["report", "--preset", "paper", "--json"]) == 0
    return json.loads(stdout.getvalue())


def test_paper_preset_json_has_one_object_per_split_point_with_exactly_the_keys(paper_rows: list[dict]) -> None:
    assert [row["split_point"] for row in paper_rows] == list(range(1, 17))
    assert [row["split_point_name"] for row in paper_rows] == [f"RB{k}" for k in range(1, 17)]
    assert all(row["arch"] == "spiking_resnet50" for row in paper_rows)
    assert all(list(row) == KEYS + LINK_KEYS for row in paper_rows)


def test_paper_preset_names_bottlenet_plus_plus_bytes(paper_rows: list[dict]) -> None:
    assert [row["bottlenetpp_bytes"] for row in paper_rows] == BOTTLENETPP_BYTES


def test_transmit_columns_on_each_link_by_hand(paper_rows: list[dict], capsys: pytest.CaptureFixture) -> None:
    # shapes alone: no measured compute, so no device total
    assert all(row["link"] == "wifi" and row["device_total_mj"] is None for row in paper_rows)
    code, out, _ = report(capsys, "--preset", "paper", "--link", "3g", "--json")
    assert code == 0
    for row in json.loads(out):
        bits = row["transmitted_bytes"] * 8
        assert row["transmit_ms"] == pytest.approx(bits / 1.10e6 * 1e3)  # 3G: 1.10 Mbit/s
        assert row["transmit_mj"] == pytest.approx((868.98 * 1.10 + 817.88) * bits / 1.10e6)


def test_paper_preset_transmits_the_table_1_bytes(paper_rows: list[dict]) -> None:
    assert [row["transmitted_bytes"] for row in paper_rows] == TABLE_1_BYTES
    for row in paper_rows:
        t, c, h, w = row["spike_shape"]
        assert t == row["time_steps"] and t * c * h * w == 8 * row["transmitted_bytes"]


def test_paper_preset_compression_and_float32_features(paper_rows: list[dict]) -> None:
    # RBk outputs 256/512/1024/2048 channels at 32/16/8/4 pixels; T*C*H*W bits over the bytes sent
    assert [row["compression_ratio"] for row in paper_rows] == [16] * 3 + [8] * 4 + [16] * 6 + [32] * 2 + [256]
    assert [row["float32_feature_bytes"] for row in paper_rows] == (
        [256 * 32 * 32 * 4] * 3 + [512 * 16 * 16 * 4] * 4 + [1024 * 8 * 8 * 4] * 6 + [2048 * 4 * 4 * 4] * 3
    )


def test_paper_preset_flops_and_ann_energy(paper_rows: list[dict]) -> None:
    # RB1 by hand: 1x1 64->64, 3x3 64->64, 1x1 64->256, all at 32x32
    assert paper_rows[0]["flops"] == 32 * 32 * (64 * 64 + 64 * 64 * 9 + 64 * 256) == 58_720_256
    flops = [row["flops"] for row in paper_rows]
    assert flops == sorted(set(flops))  # every block adds work
    for row in paper_rows:
        assert row["ann_baseline_45nm_mj"] == pytest.approx(row["flops"] * 4.6e-9)


def test_the_table_shows_bottlenet_plus_plus_and_rb16(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = report(capsys)  # --preset paper is the default
    assert code == 0
    rb16 = next(line.split() for line in out.splitlines() if line.lstrip().startswith("RB16"))
    # split, T, C'xH'xW', bits, bytes, BottleNet++ bytes, compression, ...
    assert rb16[:7] == ["RB16", "4", "32x2x2", "512", "64", "128", "256x"]


def test_width_and_classes_scale_the_preset(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = report(capsys, "--width", "0.125", "--classes", "10", "--mode", "complete", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 16
    assert rows[0]["spike_shape"] == [4, 2, 32, 32]  # C' = 16 x 0.125
    assert rows[0]["float32_feature_bytes"] == 32 * 32 * 32 * 4  # RB1 has 256 x 0.125 channels
    assert all(row["bottlenetpp_bytes"] is None for row in rows)  # the paper's figures are for full width only


# The spiking MobileNetV2 at full width on 32x32: C, H, W of each IRB's output spikes
MOBILENET_BLOCKS = (
    [(16, 32, 32)]
    + [(24, 32, 32)] * 2
    + [(32, 16, 16)] * 3
    + [(64, 8, 8)] * 4
    + [(96, 8, 8)] * 3
    + [(160, 4, 4)] * 3
    + [(320, 4, 4)]
)


def test_the_mobilenet_preset_reports_its_17_split_points(capsys: pytest.CaptureFixture) -> None:
    code, out, err = report(capsys, "--arch", "spiking_mobilenetv2", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [row["split_point_name"] for row in rows] == [f"IRB{k}" for k in range(1, 18)]
    assert [row["split_point"] for row in rows] == list(range(1, 18))
    assert len(MOBILENET_BLOCKS) == 17
    for row, (c, h, w) in zip(rows, MOBILENET_BLOCKS, strict=True):
        name = row["split_point_name"]
        assert (
            list(row) == KEYS + LINK_KEYS and row["arch"] == "spiking_mobilenetv2" and row["bottlenetpp_bytes"] is None
        )
        t, c_, h_, w_ = row["spike_shape"]
        assert t == row["time_steps"]
        assert row["transmitted_bytes"] == math.ceil(t * c_ * h_ * w_ / 8), name
        assert row["compression_ratio"] == math.ceil(t * c * h * w / 8) / row["transmitted_bytes"], name
        assert row["float32_feature_bytes"] == c * h * w * 4, name
    code, alias_out, _ = report(capsys, "--arch", "mobilenetv2", "--json")
    assert code == 0 and json.loads(alias_out) == rows


def test_compare_shows_both_backbones_side_by_side(capsys: pytest.CaptureFixture, paper_rows: list[dict]) -> None:
    code, out, err = report(capsys, "--compare")
    assert code == 0, err
    assert "spiking_resnet50" in out and "spiking_mobilenetv2" in out
    k17 = next(line.split() for line in out.splitlines() if line.split()[:1] == ["17"])
    assert "IRB17" in k17 and not any(cell.startswith("RB") for cell in k17)  # the ResNet has 16
    code, out, err = report(capsys, "--compare", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 33
    resnet = [row for row in rows if row["arch"] == "spiking_resnet50"]
    mobilenet = [row for row in rows if row["arch"] == "spiking_mobilenetv2"]
    assert len(resnet) == 16 and len(mobilenet) == 17
    assert resnet == paper_rows
    assert [row["split_point_name"] for row in mobilenet] == [f"IRB{k}" for k in range(1, 18)]


def write_images(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 24, 3), dtype=np.uint8)
        paths.append(folder / f"image{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_a_checkpoint_with_images_reports_its_measured_activity(
    capsys: pytest.CaptureFixture, tmp_path: Path, calibrated_checkpoint: Callable[..., Path]
) -> None:
    checkpoint = calibrated_checkpoint(8)
    images = write_images(tmp_path, 3)
    code, out, err = report(capsys, "--checkpoint", str(checkpoint), "--images", *map(str, images), "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert list(row) == KEYS + MEASURED_KEYS + LINK_KEYS and row["split_point"] == 8
    # what the device pays: its measured compute and the radio for the payload on Wi-Fi (BottleNet's figures)
    wifi_mj = (283.17 * 18.88 + 132.86) * row["transmitted_bytes"] * 8 / 18.88e6
    assert row["transmit_mj"] == pytest.approx(wifi_mj)
    assert row["device_total_mj"] == pytest.approx(row["device_45nm_mj"] + wifi_mj)
    assert (row["arch"], row["split_point_name"], row["bottlenetpp_bytes"]) == ("spiking_resnet50", "RB8", None)

    # The paper's count (Eq. 7-8) written out. FLOPs by hand: the three convs of RB1..RB8 at width 1/16 on a 32 x 32
    # image, (output elements) x (inputs per output), per image and time step. Stem: 4 channels. Stages of
    # (width, out): (4, 16) at 32 x 32, (8, 32) at 16 x 16, (16, 64) at 8 x 8; a stage's first block has the
    # stride on its 3x3, so its first 1x1 runs at the input's size.
    def block(size_in: int, size_out: int, c_in: int, width: int, c_out: int) -> list[int]:
        return [size_in**2 * width * c_in, size_out**2 * width * width * 9, size_out**2 * c_out * width]

    convs = [
        *block(32, 32, 4, 4, 16),
        *block(32, 32, 16, 4, 16) * 2,
        *block(32, 16, 16, 8, 32),
        *block(16, 16, 32, 8, 32) * 3,
        *block(16, 8, 32, 16, 64),
    ]
    assert row["flops"] == sum(convs) == 2_310_144
    # SyOPs_l = fr_l * T * FLOPs_l, fr_l = spikes into conv l / (T * its input neurons): the spikes are read off
    # the block convs' inputs in a plain forward of the head
    head = load_checkpoint(checkpoint, "head").model
    inputs: list[torch.Tensor] = []  # [T*B, C, H, W] per block conv, in the order they ran
    block_convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d) and m.energy_role == "block"]
    handles = [conv.register_forward_hook(lambda conv, x, y: inputs.append(x[0])) for conv in block_convs]
    batch = torch.from_numpy(np.stack([load_image(p.read_bytes(), head.config) for p in images]))  # [3, 3, 32, 32]
    with torch.no_grad():
        head(batch)
    for handle in handles:
        handle.remove()
    assert len(inputs) == len(convs) == 24
    t = head.time_steps
    spikes = [x.unflatten(0, (t, 3)).sum(dim=(0, 2, 3, 4)).double() for x in inputs]  # [B] per conv
    neurons = [x[0].numel() for x in inputs]
    syops = sum(s * flops / n for s, flops, n in zip(spikes, convs, neurons, strict=True))  # [B]
    assert row["syops"] == pytest.approx(float(syops.mean()))
    assert row["firing_rate"] == pytest.approx(float((sum(spikes) / (t * sum(neurons))).mean()))
    assert row["device_45nm_mj"] == pytest.approx(float(syops.mean()) * 0.9e-9)  # 0.9 pJ per accumulate
    assert row["device_rolls_mj"] == pytest.approx(float(syops.mean()) * 0.077e-9)  # 77 fJ per SyOP on ROLLS
    assert row["ann_baseline_45nm_mj"] == pytest.approx(sum(convs) * 4.6e-9)  # 4.6 pJ per MAC
    assert 0 < row["firing_rate"] < 1 and row["device_45nm_mj"] < row["ann_baseline_45nm_mj"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--images", "x.png"], 2, "--images needs --checkpoint"),
        (["--checkpoint", "m.safetensors", "--width", "0.5"], 2, "carries its own config"),
        (["--width", "0"], 2, "--width must be > 0"),
        (["--checkpoint", "missing.safetensors"], 1, "does not exist"),
        (["--compare", "--arch", "spiking_mobilenetv2"], 2, "--compare shows every backbone"),
        (["--compare", "--arch", "spiking_resnet50", "--json"], 2, "leave out --arch"),
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture, args: list[str], code: int, message: str) -> None:
    got, out, err = report(capsys, *args)
    assert (got, out) == (code, "") and message in err


def test_an_unreadable_image_is_named(
    capsys: pytest.CaptureFixture, tmp_path: Path, calibrated_checkpoint: Callable[..., Path]
) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    code, _, err = report(capsys, "--checkpoint", str(calibrated_checkpoint(8)), "--images", str(bad))
    assert code == 1 and f"{bad}: not an image" in err
