"""``sbn train sweep``: the paper's search for the best bottleneck at every split point.

For each split point k and each candidate (C' = C / r for each channel reduction r, stride 1 or 2,
T in {2, 4}) fine-tune from the pre-trained backbone, then measure test accuracy and the device's
energy (ActivityMonitor on the test set). Per split point the selected configuration is the one that
sends the fewest bytes while losing at most ``max_drop`` accuracy points (``select``).

    <out>/sweep.json                 the backbone and training settings (a resumed sweep must match)
    <out>/results.jsonl              one line per finished candidate; the sweep's resume point
    <out>/checkpoints/<key>.*        the candidate being trained (resumable) and the kept checkpoints
    <out>/table.{csv,json,md}        the selected configurations (paper Tables 1 and 3 columns)
    <out>/bytes.png, energy.png      per split point plots

An interrupted sweep started again with the same arguments skips every candidate already in
results.jsonl and resumes the interrupted one from its last finished epoch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from spikebottlenet.shared.activity_monitor import ActivityMonitor
from spikebottlenet.shared.backbones import BackboneConfig
from spikebottlenet.shared.bottleneck import BottleneckConfig, SplitPreset
from spikebottlenet.shared.checkpoint_metadata import read_checkpoint_info
from spikebottlenet.shared.energy import CountMode, EnergyEstimate
from spikebottlenet.shared.split_model import SplitHead

from .datasets import Dataset
from .recipes import finetune, state_path
from .resume import ResumeError
from .runtime import Runtime
from .tables import write_report
from .trainer import TrainConfig, log_path

REDUCTIONS = (4, 8, 16, 32, 64)
STRIDES = (1, 2)
TIME_STEPS = (2, 4)
MAX_DROP = 3.0  # accuracy points; the paper also reports a 4-point budget


@dataclass(frozen=True)
class Candidate:
    split_point: int
    channels: int  # C'
    stride: int
    time_steps: int

    @property
    def key(self) -> str:
        return f"k{self.split_point}-c{self.channels}-s{self.stride}-t{self.time_steps}"

    @property
    def preset(self) -> SplitPreset:
        return SplitPreset(BottleneckConfig(self.split_point, self.channels, self.stride), self.time_steps)


def candidates(
    backbone: BackboneConfig,
    split_point: int,
    reductions: Sequence[int] = REDUCTIONS,
    strides: Sequence[int] = STRIDES,
    time_steps: Sequence[int] = TIME_STEPS,
) -> list[Candidate]:
    """Every (C', stride, T) combination at split point k; reductions that round to the same C' appear once."""
    channels = backbone.split_point(split_point).channels
    widths = sorted({max(1, channels // r) for r in reductions}, reverse=True)
    return [Candidate(split_point, c, s, t) for c in widths for s in strides for t in time_steps]


def paper_candidate(backbone: BackboneConfig, split_point: int) -> Candidate:
    """The paper's bottleneck at split point k of ``backbone`` (its C', stride and T) as a sweep candidate."""
    preset = backbone.bottleneck_preset(split_point)
    return Candidate(split_point, preset.bottleneck.channels, preset.bottleneck.stride, preset.time_steps)


@dataclass(frozen=True)
class Result:
    """One fine-tuned candidate: Table 1 (bytes, accuracy) and Table 3 (device energy) facts."""

    split_point: int
    channels: int
    stride: int
    time_steps: int
    transmitted_bytes: int
    uncompressed_bytes: int
    compression: float
    test_accuracy: float
    pretrained_accuracy: float
    accuracy_drop: float
    firing_rate: float
    flops: int
    syops: float
    device_45nm_mj: float
    device_rolls_mj: float
    ann_baseline_45nm_mj: float
    # what the selection uses: the validation split's drop (None in results from before validation splits,
    # which are then selected on the test split's, as they were)
    validation_accuracy: float | None = None
    validation_drop: float | None = None

    @property
    def selection_drop(self) -> float:
        return self.accuracy_drop if self.validation_drop is None else self.validation_drop

    @property
    def key(self) -> str:
        return Candidate(self.split_point, self.channels, self.stride, self.time_steps).key


def select(results: Iterable[Result], max_drop: float = MAX_DROP) -> dict[int, Result]:
    """Per split point, the configuration with the fewest transmitted bytes whose accuracy drop on the
    validation split (``selection_drop``) is at most ``max_drop`` points; ties go to the smaller drop,
    then to fewer time steps. A split point where no candidate stays within the budget has no entry.
    The test split only reports: nothing is chosen on it."""
    best: dict[int, Result] = {}
    for r in results:
        if r.selection_drop > max_drop:
            continue
        rank = (r.transmitted_bytes, r.selection_drop, r.time_steps)
        current = best.get(r.split_point)
        if current is None or rank < (current.transmitted_bytes, current.selection_drop, current.time_steps):
            best[r.split_point] = r
    return dict(sorted(best.items()))


@torch.no_grad()
def measure_energy(head: SplitHead, data: Dataset, runtime: Runtime, batch_size: int = 256) -> EnergyEstimate:
    """Mean per-image device activity and energy of ``head`` over the test split (paper counting mode).

    Each process measures its shard; the shards' means are combined weighted by their image counts.
    """
    head.eval()
    test = data.test
    shard = torch.arange(runtime.rank, len(test), runtime.world_size)
    estimates = []
    for idx in shard.split(batch_size):
        images = data.normalize(test.images[idx].to(runtime.device))
        with ActivityMonitor(head, head.time_steps, CountMode.PAPER) as monitor:
            head(images)
        estimates += monitor.estimates()
    local = astuple(EnergyEstimate.mean(estimates))
    *weighted, count = runtime.all_sum([value * len(estimates) for value in local] + [float(len(estimates))])
    flops, *rest = (value / count for value in weighted)
    return EnergyEstimate(round(flops), *rest)


def load_results(path: Path) -> list[Result]:
    if not path.is_file():
        return []
    return [Result(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _claim(out: Path, settings: dict, runtime: Runtime) -> None:
    """Record what this sweep trains with, or check a resumed sweep trained with the same; results
    fine-tuned differently must not end up in one table. The candidate grid may grow between runs."""
    path = out / "sweep.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in settings if saved.get(k) != settings[k])
        if changed:
            raise ResumeError(
                f"{out} holds a sweep run with different {', '.join(changed)}; "
                f"use another --out, or the same settings to resume it"
            )
    elif runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")
    runtime.barrier()


def run_sweep(
    data: Dataset,
    pretrained: Path,
    out: Path,
    train: TrainConfig,
    runtime: Runtime,
    *,
    split_points: Sequence[int] | None = None,
    reductions: Sequence[int] = REDUCTIONS,
    strides: Sequence[int] = STRIDES,
    time_steps: Sequence[int] = TIME_STEPS,
    max_drop: float = MAX_DROP,
    keep_all: bool = False,
    paper_presets: bool = False,
) -> dict[int, Result]:
    """Fine-tune and measure every candidate not yet in ``out``/results.jsonl; returns the selection.

    ``split_points`` defaults to every split point of the pre-trained backbone. ``paper_presets``: one
    candidate per split point, the paper's bottleneck there (``bottleneck_preset``), instead of the grid of
    reductions, strides and time steps: the paper's table (bytes, accuracy, energy) at a fraction of the cost.
    """
    base = read_checkpoint_info(pretrained)
    backbone = base.config.backbone
    if split_points is None:
        split_points = [p.index for p in backbone.split_points()]
    _claim(
        out,
        {
            "pretrained": base.fingerprint,
            "dataset": data.name,
            "train_size": len(data.train),
            **({"paper_presets": True} if paper_presets else {}),
            "validation_size": len(data.validation),
            "test_size": len(data.test),
            "train": asdict(train),
        },
        runtime,
    )
    results_path = out / "results.jsonl"
    results = load_results(results_path)
    done = {r.key for r in results}
    for k in split_points:
        grid = (
            [paper_candidate(backbone, k)]
            if paper_presets
            else candidates(backbone, k, reductions, strides, time_steps)
        )
        for candidate in grid:
            if candidate.key in done:
                continue
            checkpoint = out / "checkpoints" / f"{candidate.key}.safetensors"
            model, record = finetune(
                data, pretrained, candidate.preset, train, runtime, checkpoint, state=state_path(checkpoint)
            )
            energy = measure_energy(model.head, data, runtime)
            geometry = model.config.geometry()
            # finetune records a split model's test accuracy, its backbone's and the drop between them
            assert (
                record.test_accuracy is not None
                and record.pretrained_accuracy is not None
                and record.accuracy_drop is not None
            )
            result = Result(
                k,
                candidate.channels,
                candidate.stride,
                candidate.time_steps,
                geometry.transmitted_bytes,
                geometry.uncompressed_bytes,
                round(geometry.compression, 2),
                record.test_accuracy,
                record.pretrained_accuracy,
                record.accuracy_drop,
                round(energy.firing_rate, 5),
                energy.flops,
                round(energy.syops),
                energy.device_45nm_mj,
                energy.device_rolls_mj,
                energy.ann_baseline_45nm_mj,
                record.validation_accuracy,
                record.validation_drop,
            )
            results.append(result)
            if runtime.is_main:
                with results_path.open("a") as f:  # one whole line per candidate: the resume point
                    f.write(json.dumps(asdict(result)) + "\n")
                state_path(checkpoint).unlink(missing_ok=True)  # its result line is the record now
                log_path(state_path(checkpoint)).unlink(missing_ok=True)
                tqdm.write(
                    f"{candidate.key}: {result.test_accuracy:.2f}% (drop {result.accuracy_drop:+.2f}), "
                    f"{result.transmitted_bytes} B, {result.device_45nm_mj:.3g} mJ at 45 nm"
                )
            runtime.barrier()
        if runtime.is_main:
            selected = select(results, max_drop)
            if not keep_all:  # split point k is complete: only its selected checkpoint is worth the disk
                for path in (out / "checkpoints").glob(f"k{k}-*.safetensors"):
                    if k not in selected or path.name != f"{selected[k].key}.safetensors":
                        path.unlink()
            write_report(results, selected, out, max_drop, backbone)
    return select(results, max_drop)
