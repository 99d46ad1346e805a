"""Where training runs: device, mixed precision and (under ``torchrun``) data-parallel processes.

The same command works on a laptop CPU, one GPU, or several GPUs:

    sbn train pretrain ...                                  # one process: CPU, or cuda:0 if present
    torchrun --nproc_per_node=8 -m sbn train pretrain ...   # 8 processes, one GPU each (DDP)

``torchrun`` sets RANK / LOCAL_RANK / WORLD_SIZE in the environment; their presence is what
switches on DistributedDataParallel, so the training code needs no flag and no change.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None  # None: full fp32

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, shows progress bars and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # fp16 has a narrow exponent range, so small gradients underflow without loss scaling;
        # bf16 keeps fp32's range and needs none (a disabled scaler is a no-op pass-through).
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (identity in a single process)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return None  # CPU autocast is slower than fp32 for these small convs
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def start(precision: str = "auto", device: str | None = None) -> Runtime:
    """Set up this process: join the process group under torchrun, pick the device and precision."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Runtime(dev, rank, world_size, _amp_dtype(precision, dev))


def stop(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
