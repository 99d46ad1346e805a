"""``sbn train``: pretrain, finetune, calibrate, sweep, demo.

    sbn train pretrain --dataset cifar100 --data-dir data/cifar-100-python --out runs/c100/backbone.safetensors
    sbn train finetune --pretrained runs/c100/backbone.safetensors --split-point 8 --out runs/c100/rb8.safetensors
    sbn train calibrate runs/c100/rb8.safetensors --data-dir data/cifar-100-python   # the "uncertain" threshold
    sbn train fit-codec runs/c100/rb8.safetensors --data-dir data/cifar-100-python   # the entropy codec's model
    sbn train refine runs/c100/rb8.safetensors --rate-weight 1 --out runs/c100/rb8-rate1.safetensors
    sbn train sweep    --pretrained runs/c100/backbone.safetensors --out runs/c100/sweep
    sbn train demo [--arch mobilenetv2]   # the shipped digits checkpoints, from scratch, on a CPU, into runs/demo
    sbn train demo --install              # ... into the package's shared/models, replacing the shipped ones

Under ``torchrun`` the same commands train data-parallel on every GPU of the machine.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from spikebottlenet.shared.backbones import ARCH_CHOICES, DEFAULT_ARCH, BackboneConfig, resolve_arch
from spikebottlenet.shared.bottleneck import BottleneckConfig, SplitPreset
from spikebottlenet.shared.checkpoint_metadata import DEFAULT_MODEL_DIR, WireTraining, read_checkpoint_info
from spikebottlenet.shared.errors import ConfigError
from spikebottlenet.shared.settings import SPLIT_POINT_RANGES

from . import runtime as rt
from .datasets import DATASETS, Dataset, load_dataset
from .demo import DEFAULT_DEMO_DATASET, DEMO_DIR, DEMOS, backbone_path, demo_table, installed_backbone_path, run_demo
from .entropy_fit import fit_codec
from .recipes import calibrate_checkpoint, finetune, pretrain, refine, state_path
from .sweep import MAX_DROP, REDUCTIONS, STRIDES, TIME_STEPS, run_sweep
from .trainer import OPTIMIZERS, TrainConfig

DEFAULTS = TrainConfig()
DEFAULT_LR = {"adamw": DEFAULTS.lr, "sgd": 0.1}  # fine-tuning and the sweep use half of these


def _add_subset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--subset",
        type=int,
        nargs=2,
        metavar=("TRAIN", "TEST"),
        help="use only the first TRAIN training and TEST validation and test examples (smoke tests)",
    )


def _add_data(p: argparse.ArgumentParser, from_checkpoint: bool) -> None:
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None if from_checkpoint else "cifar100",
        help="default: " + ("the one the backbone was pre-trained on" if from_checkpoint else "cifar100"),
    )
    p.add_argument("--data-dir", type=Path, help="cifar100: directory of the extracted cifar-100-python.tar.gz")
    _add_subset(p)


def _add_training(p: argparse.ArgumentParser, epochs: int, lr_scale: float) -> None:
    p.set_defaults(lr_scale=lr_scale)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="per process")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS.optimizer)
    p.add_argument(
        "--lr",
        type=float,
        help="peak learning rate, reached after warmup, then cosine to 0 (default: "
        + ", ".join(f"{lr * lr_scale:g} for {name}" for name, lr in DEFAULT_LR.items())
        + ")",
    )
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    p.add_argument("--warmup-epochs", type=float, default=DEFAULTS.warmup_epochs)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument(
        "--precision",
        choices=rt.PRECISIONS,
        default="auto",
        help="auto: bf16 autocast on GPUs that support it, else fp16 with loss scaling; fp32 on CPU",
    )
    p.add_argument("--device", help="torch device (default: the local GPU if any, else cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")


def _add_arch(p: argparse.ArgumentParser, from_checkpoint: bool) -> None:
    p.add_argument(
        "--arch",
        choices=ARCH_CHOICES,
        default=None if from_checkpoint else DEFAULT_ARCH,
        help="backbone; "
        + (
            "default: the pre-trained checkpoint's (given, it must match)"
            if from_checkpoint
            else f"default: {DEFAULT_ARCH}"
        ),
    )


def _add_restart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restart", action="store_true", help="ignore saved training states and start over")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("pretrain", help="train a spiking backbone without a bottleneck")
    _add_data(p, from_checkpoint=False)
    _add_arch(p, from_checkpoint=False)
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (1.0: the paper's full width)")
    p.add_argument("--time-steps", "-T", type=int, default=4)
    p.add_argument("--out", type=Path, required=True, help="backbone checkpoint to write (.safetensors)")
    _add_training(p, epochs=200, lr_scale=1.0)
    _add_restart(p)

    p = sub.add_parser("finetune", help="insert a bottleneck at a split point and fine-tune the whole model")
    _add_data(p, from_checkpoint=True)
    _add_arch(p, from_checkpoint=True)
    p.add_argument("--pretrained", type=Path, required=True, help="backbone checkpoint from `pretrain`")
    p.add_argument(
        "--split-point",
        "-k",
        type=int,
        required=True,
        help=f"the bottleneck follows split point k ({SPLIT_POINT_RANGES})",
    )
    p.add_argument("--channels", type=int, help="C' (default: the paper's, scaled to the backbone's width)")
    p.add_argument(
        "--stride", type=int, choices=(1, 2), help="default: the paper's (2 at the last split point, else 1)"
    )
    p.add_argument("--time-steps", "-T", type=int, help="default: the paper's T at this split point")
    p.add_argument("--out", type=Path, required=True, help="split checkpoint to write (.safetensors)")
    _add_training(p, epochs=30, lr_scale=0.5)
    _add_restart(p)

    p = sub.add_parser("calibrate", help="(re)compute a split checkpoint's uncertainty threshold, in place")
    p.add_argument("checkpoints", type=Path, nargs="+", metavar="CHECKPOINT")
    p.add_argument("--data-dir", help="the dataset's directory (cifar100)")
    _add_subset(p)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")

    p = sub.add_parser(
        "refine",
        help="train a split checkpoint further for the wire: fewer spikes (--rate-weight), "
        "tolerance of bit errors (--flip-probability) and lost chunks (--erase-probability)",
    )
    p.add_argument("checkpoint", type=Path, help="the split checkpoint to start from")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.safetensors)")
    p.add_argument(
        "--rate-weight",
        type=float,
        default=0.0,
        help="lambda: loss += lambda x firing rate of the transmitted spikes (default 0)",
    )
    p.add_argument(
        "--flip-probability",
        type=float,
        default=0.0,
        help="flip each transmitted spike bit with this probability in training (default 0)",
    )
    p.add_argument(
        "--erase-probability",
        type=float,
        default=0.0,
        help="silence each image's transmitted channel with this probability in training, as an entropy "
        "chunk that fails its CRC arrives (default 0)",
    )
    p.add_argument("--data-dir", help="the dataset's directory (cifar100)")
    _add_subset(p)
    _add_training(p, epochs=4, lr_scale=0.25)

    p = sub.add_parser("fit-codec", help="fit a split checkpoint's entropy-codec model on its training data")
    p.add_argument("checkpoints", type=Path, nargs="+", metavar="CHECKPOINT")
    p.add_argument(
        "--out",
        type=Path,
        help="folder for the new checkpoints (default: rewrite each in place; its "
        "fingerprint changes either way, as its config does)",
    )
    p.add_argument("--data-dir", help="the dataset's directory (cifar100)")
    _add_subset(p)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")

    p = sub.add_parser("sweep", help="fine-tune every candidate bottleneck at each split point; tables and plots")
    _add_data(p, from_checkpoint=True)
    _add_arch(p, from_checkpoint=True)
    p.add_argument("--pretrained", type=Path, required=True, help="backbone checkpoint from `pretrain`")
    p.add_argument("--out", type=Path, required=True, help="folder for results, tables, plots, checkpoints")
    p.add_argument("--split-points", type=int, nargs="+", metavar="K", help="default: all of the backbone's")
    p.add_argument(
        "--reductions",
        type=int,
        nargs="+",
        default=list(REDUCTIONS),
        metavar="R",
        help="channel reductions: C' = C / R, C being the split block's output channels",
    )
    p.add_argument("--strides", type=int, nargs="+", choices=(1, 2), default=list(STRIDES))
    p.add_argument("--time-steps", "-T", type=int, nargs="+", default=list(TIME_STEPS))
    p.add_argument(
        "--max-drop",
        type=float,
        default=MAX_DROP,
        help="accuracy points a selected configuration may lose (paper: 3, or 4)",
    )
    p.add_argument(
        "--keep-all",
        action="store_true",
        help="keep every candidate's checkpoint, not only each split point's selected one",
    )
    p.add_argument(
        "--paper-presets",
        action="store_true",
        help="one candidate per split point, the paper's bottleneck there, instead of the grid of "
        "--reductions, --strides and -T",
    )
    _add_training(p, epochs=10, lr_scale=0.5)

    p = sub.add_parser("demo", help="reproduce the shipped checkpoints (in runs/demo; --install: the package's)")
    p.add_argument(
        "--dataset",
        choices=tuple(DEMOS),
        default=DEFAULT_DEMO_DATASET,
        help="mnist: the shipped models; digits: the small ones of the smoke tests (default: %(default)s)",
    )
    p.add_argument(
        "--arch",
        choices=ARCH_CHOICES,
        action="append",
        help="only this backbone's demo models (repeatable; default: every backbone's)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=DEMO_DIR,
        help="folder for the pre-trained backbone and resumable states (default: %(default)s)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--out",
        type=Path,
        default=DEMO_DIR,
        help="where the split checkpoints go (default: %(default)s, under the current directory)",
    )
    out.add_argument(
        "--install",
        action="store_true",
        help=f"write them into the installed package's {DEFAULT_MODEL_DIR}, replacing the shipped ones",
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--device", help="torch device (default: cpu; the demo is sized for a laptop CPU)")
    _add_restart(p)


def _checkpoint_dataset(path: Path, args: argparse.Namespace) -> Dataset:
    """The dataset a checkpoint was trained on (its info says which), prepared in its input style."""
    checkpoint = read_checkpoint_info(path)
    return load_dataset(
        checkpoint.info.dataset or "cifar100",
        args.data_dir,
        checkpoint.config.input_style,
        subset=tuple(args.subset) if args.subset else None,
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer] * args.lr_scale
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
    )


def _pretrained_backbone(args: argparse.Namespace) -> BackboneConfig:
    """The pre-trained checkpoint's backbone config, checked against ``--arch`` when given."""
    backbone = read_checkpoint_info(args.pretrained).config.backbone
    if args.arch and resolve_arch(args.arch) != backbone.arch:
        raise ConfigError(f"{args.pretrained} is a {backbone.arch} backbone, not {resolve_arch(args.arch)}")
    return backbone


def _preset(args: argparse.Namespace) -> SplitPreset:
    """The paper's (C', stride, T) at the split point, with any of them overridden from the command line."""
    paper = _pretrained_backbone(args).bottleneck_preset(args.split_point)
    bottleneck = BottleneckConfig(
        args.split_point, args.channels or paper.bottleneck.channels, args.stride or paper.bottleneck.stride
    )
    return SplitPreset(bottleneck, args.time_steps or paper.time_steps)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.action == "demo":
        started = time.perf_counter()
        runtime = rt.start("fp32", args.device or "cpu")
        plans = DEMOS[args.dataset]
        archs = [resolve_arch(a) for a in args.arch] if args.arch else list(plans)
        out = DEFAULT_MODEL_DIR if args.install else args.out
        paths = [
            path
            for arch in archs
            for path in run_demo(runtime, args.work, args.dataset, plans[arch], out, restart=args.restart)
        ]
        if args.install:  # the backbones too: further split points fine-tune from them
            for arch in archs:
                installed = installed_backbone_path(args.dataset, arch)
                installed.parent.mkdir(exist_ok=True)
                shutil.copyfile(backbone_path(args.work, args.dataset, arch), installed)
        print(demo_table(paths) + f"\n{len(paths)} checkpoints in {out}, {time.perf_counter() - started:.0f}s")
        return 0
    if args.action == "calibrate":
        runtime = rt.start("fp32", "cpu")
        for path in args.checkpoints:
            c = calibrate_checkpoint(path, _checkpoint_dataset(path, args), runtime)
            print(
                f"{path}: flag below max softmax {c.threshold:.4f} "
                f"({100 * c.flagged_fraction:.1f}% of {c.calibration_images} validation images)"
            )
        return 0
    if args.action == "fit-codec":
        runtime = rt.start("fp32", "cpu")
        for path in args.checkpoints:
            out = path if args.out is None else args.out / path.name
            f = fit_codec(path, _checkpoint_dataset(path, args), runtime, out)
            print(
                f"{out}: entropy payload {f.entropy_mean_bytes} B per test image (raw {f.raw_bytes} B; "
                f"first-order bound {f.first_order_bound_bytes} B)"
            )
        return 0
    runtime = rt.start(args.precision, args.device)
    if args.action == "refine":
        try:
            record = refine(
                args.checkpoint,
                _checkpoint_dataset(args.checkpoint, args),
                _train_config(args),
                WireTraining(args.rate_weight, args.flip_probability, args.erase_probability),
                runtime,
                args.out,
            )
            if runtime.is_main:
                codec = record.entropy_codec
                assert codec is not None  # refine's main process refits the entropy codec on the new spikes
                print(
                    f"wrote {args.out}: test accuracy {record.test_accuracy:.2f}% "
                    f"(drop {record.accuracy_drop:+.2f}), "
                    f"entropy payload {codec.entropy_mean_bytes} B per test image (raw {codec.raw_bytes} B)"
                )
        finally:
            rt.stop(runtime)
        return 0
    try:
        dataset = args.dataset or read_checkpoint_info(args.pretrained).info.dataset or "cifar100"
        data = load_dataset(dataset, args.data_dir, subset=tuple(args.subset) if args.subset else None)
        train = _train_config(args)
        if args.action == "sweep":
            backbone = _pretrained_backbone(args)
            split_points = args.split_points or [p.index for p in backbone.split_points()]
            selected = run_sweep(
                data,
                args.pretrained,
                args.out,
                train,
                runtime,
                split_points=split_points,
                reductions=args.reductions,
                strides=args.strides,
                time_steps=args.time_steps,
                max_drop=args.max_drop,
                keep_all=args.keep_all,
                paper_presets=args.paper_presets,
            )
            if runtime.is_main:
                print((args.out / "table.md").read_text() if selected else "no configuration within the budget")
        elif args.action == "pretrain":
            record = pretrain(
                data,
                resolve_arch(args.arch),
                args.width,
                args.time_steps,
                train,
                runtime,
                args.out,
                state=state_path(args.out),
                restart=args.restart,
            )
            if runtime.is_main:
                print(f"wrote {args.out}: test accuracy {record.test_accuracy:.2f}%")
        else:
            _, record = finetune(
                data,
                args.pretrained,
                _preset(args),
                train,
                runtime,
                args.out,
                state=state_path(args.out),
                restart=args.restart,
            )
            if runtime.is_main:
                print(
                    f"wrote {args.out}: test accuracy {record.test_accuracy:.2f}%, "
                    f"drop {record.accuracy_drop:+.2f} points against the backbone"
                )
    finally:
        rt.stop(runtime)
    return 0
