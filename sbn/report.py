"""``sbn report``: what each split point sends over the network and what the device spends on it.

    sbn report --preset paper                      # the paper's ResNet50 / CIFAR-100, RB1..RB16 (Table 1)
    sbn report --preset paper --width 0.125        # the same bottlenecks on a narrow backbone
    sbn report --checkpoint m.safetensors --images a.png b.jpg   # one split point, measured spikes

Per split point RBk, all figures per image:

    spike shape        T x C' x H' x W' of the bottleneck output, the transmitted tensor
    transmitted bytes  ceil(T*C'*H'*W' / 8), the raw codec's payload
    compression        bytes of RBk's own output spikes (T*C*H*W bits) / transmitted bytes
    float32 feature    C*H*W*4 bytes: what an ANN split after the same block would send uncompressed
    FLOPs              MACs of the device's counted layers (--mode; see shared/energy.py)
    ANN baseline       FLOPs * 4.6 pJ, the same layers as 45 nm multiply-accumulates

With a checkpoint and images the head runs for real, and the firing rate, SyOPs and the SNN's energy
at 45 nm and on ROLLS are measured (averaged over the images). Everything else comes from shapes: the
heads are built on the meta device, where no weight is allocated and nothing but shapes is computed,
so even the full-width ResNet50 reports instantly.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from shared.bottleneck import BOTTLENETPP_BYTES, paper_preset
from shared.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info
from shared.codec import raw_length
from shared.energy import E_MAC_45NM_PJ, PJ_PER_MJ, ActivityMonitor, CountMode, structural_flops
from shared.preprocess import ImageError, load_image
from shared.spiking_resnet import NUM_BLOCKS, SpikingResNetConfig, block_specs
from shared.split_model import ModelConfig, SplitHead

BATCH_SIZE = 16  # images per head forward when measuring


@dataclass(frozen=True)
class Measured:
    """A checkpoint's measured activity, averaged over the images."""

    firing_rate: float
    syops: float
    device_45nm_mj: float
    device_rolls_mj: float


@dataclass(frozen=True)
class SplitPointRow:
    split_point: int
    time_steps: int
    spike_shape: tuple[int, ...]  # T, C', H', W' of one image
    transmitted_bytes: int
    compression_ratio: float
    float32_feature_bytes: int
    flops: int
    ann_baseline_45nm_mj: float
    measured: Measured | None = None

    def to_json(self) -> dict:
        row = asdict(self)
        row["spike_shape"] = list(self.spike_shape)
        measured = row.pop("measured")
        return {**row, **(measured or {})}


def structural_row(config: ModelConfig, mode: CountMode) -> SplitPointRow:
    """Everything that follows from a split model's config alone."""
    block = block_specs(config.backbone)[config.bottleneck.split_point - 1]
    # FLOPs are counted per time step, so a one-step head gives the same count at 1/T of the work
    # (on the meta device every elementwise op of the LIF loop is a Python shape computation)
    with torch.device("meta"):
        head = SplitHead(replace(config, time_steps=1))
    flops = structural_flops(head, 1, config.backbone.image_size, mode)
    transmitted = raw_length(config.spike_shape)
    block_spikes = (config.time_steps, block.out_channels, block.out_size, block.out_size)  # [T, C, H, W]
    return SplitPointRow(
        split_point=config.bottleneck.split_point,
        time_steps=config.time_steps,
        spike_shape=config.spike_shape,
        transmitted_bytes=transmitted,
        compression_ratio=raw_length(block_spikes) / transmitted,
        float32_feature_bytes=block.out_channels * block.out_size ** 2 * 4,
        flops=flops,
        ann_baseline_45nm_mj=flops * E_MAC_45NM_PJ / PJ_PER_MJ,
    )


def measure(head: SplitHead, images: torch.Tensor, mode: CountMode) -> Measured:
    """Run the head on normalized images [N, 3, H, W] and average the per-image energy estimates."""
    estimates = []
    with torch.inference_mode():
        for batch in images.split(BATCH_SIZE):
            with ActivityMonitor(head, head.time_steps, mode) as monitor:
                head(batch)
            estimates += monitor.estimates()
    n = len(estimates)
    return Measured(
        firing_rate=sum(e.firing_rate for e in estimates) / n,
        syops=sum(e.syops for e in estimates) / n,
        device_45nm_mj=sum(e.device_45nm_mj for e in estimates) / n,
        device_rolls_mj=sum(e.device_rolls_mj for e in estimates) / n,
    )


def preset_configs(width: float, classes: int) -> list[ModelConfig]:
    """The paper's bottleneck at every split point, on a backbone of the given width and classes."""
    backbone = SpikingResNetConfig(width_multiplier=width, num_classes=classes)
    return [ModelConfig(backbone=backbone).with_split(paper_preset(k, backbone)) for k in range(1, NUM_BLOCKS + 1)]


# ---------------------------------------------------------------------------------------------
# output


def millions(value: float) -> str:
    """1178599424 -> '1,178.60'."""
    return f"{value / 1e6:,.2f}"


def table(rows: list[SplitPointRow], config: ModelConfig, mode: CountMode) -> str:
    backbone = config.backbone
    # BottleNet++'s bytes are the paper's, so they only describe the paper's full-width backbone
    paper_backbone = backbone.width_multiplier == 1.0 and backbone.image_size == 32
    header = ["split", "T", "spikes C'xH'xW'", "bits", "bytes"]
    header += ["BN++ bytes"] if paper_backbone else []
    header += ["compression", "float32 B", "FLOPs (M)", "ANN mJ"]
    measured = rows[0].measured is not None
    if measured:
        header += ["fire rate", "SyOPs (M)", "SNN 45nm mJ", "ROLLS mJ", "ANN/45nm", "ANN/ROLLS"]
    lines = []
    for row in rows:
        t, c, h, w = row.spike_shape
        cells = [f"RB{row.split_point}", str(t), f"{c}x{h}x{w}", f"{t * c * h * w:,}", f"{row.transmitted_bytes:,}"]
        cells += [f"{BOTTLENETPP_BYTES[row.split_point - 1]:,}"] if paper_backbone else []
        cells += [f"{row.compression_ratio:g}x", f"{row.float32_feature_bytes:,}", millions(row.flops),
                  f"{row.ann_baseline_45nm_mj:.4g}"]
        if row.measured:
            m = row.measured
            cells += [f"{m.firing_rate:.4f}", f"{m.syops / 1e6:.4g}", f"{m.device_45nm_mj:.4g}", f"{m.device_rolls_mj:.4g}",
                      f"{row.ann_baseline_45nm_mj / m.device_45nm_mj:.1f}x",
                      f"{row.ann_baseline_45nm_mj / m.device_rolls_mj:.1f}x"]
        lines.append(cells)
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))

    title = (f"Spike ResNet50, width x{backbone.width_multiplier:g}, {backbone.num_classes} classes, "
             f"{backbone.image_size}x{backbone.image_size} input; per image; FLOPs counted in {mode.value} mode")
    notes = ["compression: RBk's own T*C*H*W spike bits / transmitted bytes; float32 B: an ANN's C*H*W*4 feature",
             "ANN mJ: FLOPs x 4.6 pJ (45 nm MAC)"]
    if paper_backbone:
        notes.append("BN++ bytes: BottleNet++ at the same point, from the paper's Table 1")
    if measured:
        notes.append("SNN: SyOPs x 0.9 pJ (45 nm) or x 77 fJ (ROLLS), averaged over the images")
    return "\n".join([title, "", render(header), *map(render, lines), "", *notes])


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["paper"],
                        help="bottleneck preset at all 16 split points (default: paper, without --checkpoint)")
    parser.add_argument("--width", type=float, help="backbone width multiplier for the preset (default 1.0)")
    parser.add_argument("--classes", type=int, help="number of classes for the preset (default 100)")
    parser.add_argument("--checkpoint", type=Path, help="report this checkpoint's split point instead")
    parser.add_argument("--images", type=Path, nargs="+", metavar="IMAGE",
                        help="with --checkpoint: measure firing rate, SyOPs and energy on these image files")
    parser.add_argument("--mode", choices=[m.value for m in CountMode], default=CountMode.PAPER.value,
                        help="paper: block convs only, as the paper counts; complete: also stem, shortcuts, encoder")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per split point")


def run(args: argparse.Namespace) -> int:
    mode = CountMode(args.mode)
    if args.checkpoint and (args.preset or args.width is not None or args.classes is not None):
        return fail("a checkpoint carries its own config: --preset, --width and --classes go without --checkpoint", 2)
    if args.images and not args.checkpoint:
        return fail("--images needs --checkpoint: the head whose spikes are measured", 2)
    if (args.width is not None and args.width <= 0) or (args.classes is not None and args.classes < 1):
        return fail("--width must be > 0 and --classes >= 1", 2)
    try:
        if args.checkpoint:
            config = read_checkpoint_info(args.checkpoint).config
            if config.bottleneck is None:
                return fail(f"{args.checkpoint} is a backbone checkpoint: it has no split point to report", 1)
            row = structural_row(config, mode)
            if args.images:
                head = load_checkpoint(args.checkpoint, "head").model
                images = torch.stack([read_image(path, config) for path in args.images])  # [N, 3, H, W]
                row = replace(row, measured=measure(head, images, mode))
            rows = [row]
        else:
            configs = preset_configs(1.0 if args.width is None else args.width,
                                     100 if args.classes is None else args.classes)
            config, rows = configs[0], [structural_row(c, mode) for c in configs]
    except (CheckpointError, ImageError) as e:
        return fail(str(e), 1)
    print(json.dumps([row.to_json() for row in rows], indent=2) if args.json else table(rows, config, mode))
    return 0


def read_image(path: Path, config: ModelConfig) -> torch.Tensor:
    try:
        return load_image(path.read_bytes(), config)
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror}") from None
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None


def fail(message: str, code: int) -> int:
    print(f"sbn report: error: {message}", file=sys.stderr)
    return code
