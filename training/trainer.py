"""The training loop shared by pre-training, fine-tuning, the sweep and the demo.

    for each epoch:
        shuffle (DistributedSampler: each process gets its own shard, same order on restart)
        for each batch: augment + normalize on the device -> forward (autocast) -> cross-entropy
                        -> backward (loss-scaled under fp16) -> optimizer step at lr_at(step)
        evaluate on the validation split (sharded over processes, counts summed)
        rank 0: write the resumable state (training/resume.py)

Everything random is seeded from ``TrainConfig.seed`` and the epoch, so a run resumed after an
interrupt continues exactly as if it had not stopped (on the same hardware).
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from spikebottlenet.shared.checkpoint_metadata import WireTraining
from spikebottlenet.shared.errors import ConfigError
from spikebottlenet.shared.split_model import SpikeBottleNet

from .datasets import Dataset, ImageSet
from .resume import load_train_state, save_train_state
from .runtime import Runtime
from .wire_training import WireHook

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128  # per process; the global batch is batch_size * processes
    optimizer: str = "adamw"
    lr: float = 2e-3  # peak learning rate, reached after warmup, then cosine to 0
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    momentum: float = 0.9  # SGD only
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch size must be >= 1")


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup to ``peak``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # no weight decay on BN affine parameters and biases: decaying tdBN's scale towards 0 would
    # push every membrane below threshold and silence the layer
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, split: ImageSet, runtime: Runtime, batch_size: int = 256
) -> tuple[float, float]:
    """(accuracy in %, mean cross-entropy) of ``model`` on ``split``, sharded over processes.

    Process r takes examples r, r + world, r + 2*world ...: every example exactly once, no padding.
    """
    model.eval()
    shard = torch.arange(runtime.rank, len(split), runtime.world_size, device=split.labels.device)
    correct = loss = 0.0
    for idx in shard.split(batch_size):
        images = data.normalize(split.images[idx].to(runtime.device))
        labels = split.labels[idx].to(runtime.device)
        with runtime.autocast():
            logits = model(images).float()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    correct, loss, count = runtime.all_sum([correct, loss, float(len(shard))])
    return 100.0 * correct / count, loss / count


def log_path(state_path: Path) -> Path:
    """The text log of the run whose resumable state is ``state_path``: one line per epoch, appended."""
    return state_path.with_name(state_path.name.removesuffix(".safetensors") + ".log")


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    runtime: Runtime,
    *,
    state_path: Path | None = None,
    run: dict[str, Any] | None = None,
    description: str = "train",
    wire: WireTraining = WireTraining(),
) -> list[dict[str, float]]:
    """Train ``model`` in place; returns the per-epoch history (the last entry is the final model).

    With ``state_path``, training resumes from that file when it exists (``run`` must match what it
    was written for) and rewrites it after every epoch, appending the epoch's line to ``log_path``. ``wire``: a
    firing-rate term on the spikes a split model transmits and bit flips on them in training
    (training/wire_training.py).
    """
    with ExitStack() as stack:
        hook: WireHook | None = None
        if wire.active:
            if not isinstance(model, SpikeBottleNet):
                raise TypeError(
                    f"the wire's terms train what a split model transmits; a {type(model).__name__} transmits nothing"
                )
            hook = stack.enter_context(
                WireHook(model.head, wire, torch.Generator(runtime.device).manual_seed(config.seed + 7919))
            )
        return _fit(model, data, config, runtime, state_path, run, description, hook)


def _fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    runtime: Runtime,
    state_path: Path | None,
    run: dict[str, Any] | None,
    description: str,
    hook: WireHook | None,
) -> list[dict[str, float]]:
    model.to(runtime.device)
    train, validation = data.train.to(runtime.device), data.validation.to(runtime.device)
    # DDP averages gradients across processes in backward; the unwrapped model is what gets saved
    net = (
        DistributedDataParallel(model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)
        if runtime.distributed
        else model
    )
    optimizer = make_optimizer(model, config)
    scaler = runtime.grad_scaler()
    run = {
        "train": asdict(config),
        "dataset": data.name,
        "train_size": len(train),
        "validation_size": len(validation),
        "processes": runtime.world_size,
        **({"wire": asdict(hook.wire)} if hook else {}),
        **(run or {}),
    }

    # a sampler over indices: set_epoch(e) makes epoch e's order a function of (seed, e) only. It reads only the
    # length of what it samples, which a range has; torch annotates that as a Dataset
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(train)),  # type: ignore[arg-type]
        num_replicas=runtime.world_size,
        rank=runtime.rank,
        shuffle=True,
        seed=config.seed,
    )
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)

    history: list[dict[str, float]] = []
    if state_path is not None and state_path.is_file():
        history = load_train_state(state_path, model, optimizer, scaler, run)["history"]
        if runtime.is_main:
            tqdm.write(f"{description}: resuming from {state_path} after epoch {len(history)}/{config.epochs}")

    for epoch in range(len(history), config.epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), device=runtime.device)
        generator = torch.Generator(runtime.device).manual_seed(config.seed * 1_000_003 + epoch * 1009 + runtime.rank)
        net.train()
        sums = torch.zeros(2, dtype=torch.float64, device=runtime.device)  # loss sum, correct: no per-step sync
        count = 0
        bar = tqdm(
            order.split(config.batch_size),
            desc=f"{description} {epoch + 1}/{config.epochs}",
            disable=not runtime.is_main,
            leave=False,
            dynamic_ncols=True,
        )
        for i, idx in enumerate(bar):
            lr = lr_at(epoch * steps_per_epoch + i, total_steps, warmup_steps, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            labels = train.labels[idx]
            images = data.normalize(data.augment(train.images[idx], labels, generator))  # [B, 3, 32, 32]
            with runtime.autocast():
                logits = net(images).float()  # [B, K]
            loss = F.cross_entropy(logits, labels)
            if hook is not None:
                loss = loss + hook.penalty()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sums += torch.stack([loss.detach() * len(idx), (logits.argmax(1) == labels).sum()])
            count += len(idx)
            if runtime.is_main and (i % 10 == 0 or i == len(bar) - 1):  # .tolist() waits for the GPU
                loss_sum, correct = sums.tolist()
                bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{100 * correct / count:.1f}%", lr=f"{lr:.2e}")
        # over every process: the loss sum, the right answers and the images seen
        loss_sum, correct, seen = runtime.all_sum([*sums.tolist(), float(count)])
        validation_accuracy, validation_loss = evaluate(model, data, validation, runtime)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": round(loss_sum / seen, 4),
                "train_accuracy": round(100 * correct / seen, 2),
                "validation_loss": round(validation_loss, 4),
                "validation_accuracy": round(validation_accuracy, 2),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        if runtime.is_main:
            h = history[-1]
            line = (
                f"{description} epoch {epoch + 1}/{config.epochs}: loss {h['train_loss']:.3f}  "
                f"train {h['train_accuracy']:.2f}%  validation {h['validation_accuracy']:.2f}%  ({h['seconds']:.0f}s)"
            )
            tqdm.write(line)
            if state_path is not None:
                save_train_state(state_path, model, optimizer, scaler, run, {"history": history})
                with log_path(state_path).open("a") as log:
                    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        runtime.barrier()  # nobody races ahead into the next epoch's state while rank 0 writes
    return history
