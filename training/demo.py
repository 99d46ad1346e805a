"""``sbn train demo``: the shipped checkpoints shared/models/digits_rb{k}.safetensors, from scratch.

A narrow spiking ResNet (all 16 blocks, width multiplier ``DEMO.width``) is pre-trained once on the
scikit-learn digits, then fine-tuned with the paper's bottleneck (C' scaled to the width, the paper's
stride and T) at each shipped split point: an early one, the services' default RB8, and RB16 at the
paper's 256x compression. Everything is seeded (two runs on one machine gave identical training
curves and accuracies); on two idle CPU cores the whole run takes 15-20 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from shared.bottleneck import paper_preset
from shared.checkpoint import DEFAULT_MODEL_DIR, read_checkpoint_info

from .datasets import load_digits
from .recipes import SplitStats, finetune, pretrain, state_path
from .runtime import Runtime
from .trainer import TrainConfig


@dataclass(frozen=True)
class DemoPlan:
    width: float = 0.0625  # ~0.4 MB per split checkpoint in float32
    # Pre-training at T=1 costs a quarter of T=4, and transfers: run at T=1, 2 and 4 without any
    # fine-tuning, the T=1 backbone scores 94.4%, 94.2% and 93.9%. Each split then trains at its own T.
    pretrain_time_steps: int = 1
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=40, batch_size=32, lr=3e-3, weight_decay=1e-4, warmup_epochs=1.0, seed=0))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=4, batch_size=32, lr=3e-3, weight_decay=1e-4, warmup_epochs=0.5, seed=0))
    # (split point, fine-tuning epochs). At this width the paper's C' is 1 channel at RB3 and 2 at
    # RB16 (32 bits per image), and the deep tail re-learns slowly from so little: they get longer.
    splits: tuple[tuple[int, int], ...] = ((3, 8), (8, 4), (16, 8))

    @property
    def split_points(self) -> tuple[int, ...]:
        return tuple(k for k, _ in self.splits)


DEMO = DemoPlan()


def demo_table(paths: list[Path]) -> str:
    """Markdown table of shipped checkpoints, from their metadata alone (README material)."""
    lines = ["| split point | C' | stride | T | bytes | compression | accuracy % | drop | file |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        ckpt = read_checkpoint_info(path)
        b, info = ckpt.config.bottleneck, ckpt.info
        stats = SplitStats.of(ckpt.config)
        lines.append(f"| RB{b.split_point} | {b.channels} | {b.stride} | {ckpt.config.time_steps} | "
                     f"{stats.transmitted_bytes} | {stats.compression:g}x | {info['test_accuracy']:.2f} | "
                     f"{info['accuracy_drop']:+.2f} | {path.stat().st_size / 1e6:.2f} MB |")
    return "\n".join(lines) + "\n"


def run_demo(runtime: Runtime, work: Path, out: Path = DEFAULT_MODEL_DIR, plan: DemoPlan = DEMO,
             restart: bool = False) -> list[Path]:
    """Pre-train once into ``work``, fine-tune each split point into ``out``; returns the checkpoints."""
    data = load_digits()
    backbone = work / "digits_backbone.safetensors"
    pretrain(data, plan.width, plan.pretrain_time_steps, plan.pretrain, runtime, backbone,
             state=state_path(backbone), restart=restart)
    paths = []
    for k, epochs in plan.splits:
        path = out / f"digits_rb{k}.safetensors"
        preset = paper_preset(k, read_checkpoint_info(backbone).config.backbone)
        # the resumable state stays in the work folder: shared/models holds checkpoints only
        finetune(data, backbone, preset, replace(plan.finetune, epochs=epochs), runtime, path,
                 state=work / f"digits_rb{k}.train-state.safetensors", restart=restart)
        paths.append(path)
    return paths
