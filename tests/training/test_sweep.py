"""The sweep: candidate generation, the selection rule, and resuming an interrupted sweep."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from spikebottlenet.shared.backbones import SpikingMobileNetV2Config, SpikingResNetConfig
from spikebottlenet.training import sweep
from spikebottlenet.training.datasets import Dataset
from spikebottlenet.training.runtime import Runtime
from spikebottlenet.training.sweep import (
    Candidate,
    Result,
    candidates,
    load_results,
    paper_candidate,
    run_sweep,
    select,
)
from spikebottlenet.training.tables import markdown, table_row
from tests.training.conftest import TINY_TRAIN


def result(split_point: int, nbytes: int, drop: float, time_steps: int = 2) -> Result:
    return Result(
        split_point=split_point,
        channels=nbytes,
        stride=1,
        time_steps=time_steps,
        transmitted_bytes=nbytes,
        uncompressed_bytes=8192,
        compression=8192 / nbytes,
        test_accuracy=70.0 - drop,
        pretrained_accuracy=70.0,
        accuracy_drop=drop,
        firing_rate=0.1,
        flops=1000,
        syops=100.0,
        device_45nm_mj=1e-6,
        device_rolls_mj=1e-7,
        ann_baseline_45nm_mj=5e-6,
    )


def test_select_takes_the_fewest_bytes_within_the_drop_budget() -> None:
    table = [
        result(1, 4096, 0.5),
        result(1, 1024, 2.9),
        result(1, 512, 3.5),  # 512 B loses too much
        result(2, 2048, 1.0),
        result(2, 2048, 0.2, time_steps=4),  # a tie in bytes: the smaller drop
        result(3, 256, 5.0),  # nothing within budget: RB3 has no entry
        result(4, 64, -0.4),  # a negative drop (the split model beat the backbone) qualifies
    ]
    chosen = select(table, max_drop=3.0)
    assert sorted(chosen) == [1, 2, 4]
    assert chosen[1].transmitted_bytes == 1024
    assert chosen[2].accuracy_drop == 0.2
    assert select(table, max_drop=4.0)[1].transmitted_bytes == 512


def test_candidates_cover_reductions_strides_and_time_steps() -> None:
    backbone = SpikingResNetConfig(width_multiplier=0.0625)  # RB1 has 16 output channels
    found = candidates(backbone, 1, reductions=(4, 8, 16, 32), strides=(1, 2), time_steps=(2, 4))
    assert {c.channels for c in found} == {4, 2, 1}  # 16/16 and 16/32 both round to C' = 1
    assert len(found) == 3 * 2 * 2
    assert Candidate(1, 4, 2, 4) in found
    assert Candidate(1, 4, 2, 4).key == "k1-c4-s2-t4"


def test_the_paper_candidate_is_the_papers_bottleneck() -> None:
    # the paper's RB16 (Table 1): 2048 x 4 x 4 spikes into C' = 32 at stride 2, T = 4: 4 * 32 * 2 * 2 bits, 64 bytes
    rb16 = paper_candidate(SpikingResNetConfig(), 16)
    assert (rb16.channels, rb16.stride, rb16.time_steps) == (32, 2, 4)
    assert rb16.preset == SpikingResNetConfig().bottleneck_preset(16)


def test_table_rows_name_the_split_point_and_compare_with_bottlenetpp_only_at_full_width() -> None:
    r = result(16, 64, 0.1)
    full = table_row(r, SpikingResNetConfig())
    assert full["split_point_name"] == "RB16"
    assert full["bottlenetpp_bytes"] == 128 and full["bit_reduction"] == round(128 / 64, 2)
    narrow = table_row(r, SpikingResNetConfig(width_multiplier=0.0625))
    assert narrow["split_point_name"] == "RB16"
    assert narrow["bottlenetpp_bytes"] is None and narrow["bit_reduction"] is None
    mobilenet = table_row(result(17, 64, 0.1), SpikingMobileNetV2Config())
    assert mobilenet["split_point_name"] == "IRB17" and mobilenet["bottlenetpp_bytes"] is None
    table = markdown([full], 3.0, SpikingResNetConfig())
    assert "| split |" in table and "| RB16 | 64 |" in table


def test_an_interrupted_sweep_resumes_after_its_last_finished_candidate(
    tiny_backbone: Path, tiny_digits: Dataset, cpu: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[int] = []
    finetune = sweep.finetune

    def counting_finetune(data, pretrained, preset, *args, **kwargs):
        trained.append(preset.bottleneck.split_point)
        if len(trained) == 2 and crash:
            raise KeyboardInterrupt
        return finetune(data, pretrained, preset, *args, **kwargs)

    monkeypatch.setattr(sweep, "finetune", counting_finetune)
    kwargs = dict(split_points=(1, 16), reductions=(64,), strides=(2,), time_steps=(1,))
    train = dataclasses.replace(TINY_TRAIN, batch_size=32)

    crash = True
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tiny_digits, tiny_backbone, tmp_path, train, cpu, **kwargs)
    assert [r.split_point for r in load_results(tmp_path / "results.jsonl")] == [1]

    crash, trained[:] = False, []
    selected = run_sweep(tiny_digits, tiny_backbone, tmp_path, train, cpu, max_drop=100.0, **kwargs)
    assert trained == [16]  # RB1 was not trained again
    assert [r.split_point for r in load_results(tmp_path / "results.jsonl")] == [1, 16]
    assert sorted(selected) == [1, 16]

    table = json.loads((tmp_path / "table.json").read_text())
    assert [row["split_point"] for row in table["selected"]] == [1, 16]
    row = table["selected"][1]
    assert row["split_point_name"] == "RB16"
    # the paper's BottleNet++ figures are for the full-width model only; the tiny backbone is 1/16 wide
    assert row["bottlenetpp_bytes"] is None and row["bit_reduction"] is None
    assert row["device_45nm_mj"] > 0 and row["ann_baseline_45nm_mj"] > row["device_45nm_mj"]
    for name in ("table.csv", "table.md", "bytes.png", "energy.png"):
        assert (tmp_path / name).stat().st_size > 0
    with pytest.raises(ValueError, match="different train"):  # more epochs: not the same sweep any more
        run_sweep(tiny_digits, tiny_backbone, tmp_path, dataclasses.replace(train, epochs=2), cpu, **kwargs)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == [f"{selected[1].key}.safetensors", f"{selected[16].key}.safetensors"]  # no train states left
