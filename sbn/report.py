"""``sbn report``: what each split point sends over the network and what the device spends on it.

    sbn report --preset paper                      # the paper's ResNet50 / CIFAR-100, RB1..RB16 (Table 1)
    sbn report --arch mobilenetv2                  # the spiking MobileNetV2, IRB1..IRB17, the paper's rule
    sbn report --compare                           # both backbones side by side
    sbn report --preset paper --width 0.125        # the same bottlenecks on a narrow backbone
    sbn report --checkpoint m.safetensors --images a.png b.jpg   # one split point, measured spikes

Per split point (RBk, IRBk), all figures per image:

    spike shape        T x C' x H' x W' of the bottleneck output, the transmitted tensor
    transmitted bytes  ceil(T*C'*H'*W' / 8), the raw codec's payload
    compression        bytes of the block's own output spikes (T*C*H*W bits) / transmitted bytes
    float32 feature    C*H*W*4 bytes: what an ANN split after the same block would send uncompressed
    FLOPs              MACs of the device's counted layers (--mode; see shared/energy.py)
    ANN baseline       FLOPs * 4.6 pJ, the same layers as 45 nm multiply-accumulates
    transmit           time and radio energy to send the transmitted bytes on --link (shared/radio.py:
                       BottleNet's measured uplinks, P(r) x bytes / r)
    device total       measured SNN energy at 45 nm + transmit energy: what the device pays

With a checkpoint and images the head runs for real, and the firing rate, SyOPs and the SNN's energy
at 45 nm and on ROLLS are measured (averaged over the images). Everything else comes from shapes: the
heads are built on the meta device, where no weight is allocated and nothing but shapes is computed,
so even the full-width backbones report instantly.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from spikebottlenet.shared.activity_monitor import ActivityMonitor, structural_flops
from spikebottlenet.shared.backbones import ARCH_CHOICES, BACKBONES, DEFAULT_ARCH, backbone_config
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import read_checkpoint_info
from spikebottlenet.shared.energy import E_MAC_45NM_PJ, PJ_PER_MJ, CountMode, EnergyEstimate
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import ImageError, load_image
from spikebottlenet.shared.radio import DEFAULT_LINK, LINK_PROFILES, LinkProfile, link_profile
from spikebottlenet.shared.split_model import SplitHead

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
    arch: str
    split_point: int
    split_point_name: str  # RBk, IRBk
    time_steps: int
    spike_shape: tuple[int, ...]  # T, C', H', W' of one image
    transmitted_bytes: int
    compression_ratio: float
    float32_feature_bytes: int
    flops: int
    ann_baseline_45nm_mj: float
    bottlenetpp_bytes: int | None  # the paper's ANN baseline at this point, where it has a figure
    measured: Measured | None = None

    def to_json(self, link: LinkProfile) -> dict:
        row = asdict(self)
        row["spike_shape"] = list(self.spike_shape)
        measured = row.pop("measured")
        return {
            **row,
            **(measured or {}),
            "link": link.name,
            "transmit_ms": link.transmit_ms(self.transmitted_bytes),
            "transmit_mj": link.transmit_mj(self.transmitted_bytes),
            "device_total_mj": self.device_total_mj(link),
        }

    def device_total_mj(self, link: LinkProfile) -> float | None:
        """Measured compute at 45 nm + the radio's energy for the payload; None without a measurement."""
        return (
            None if self.measured is None else self.measured.device_45nm_mj + link.transmit_mj(self.transmitted_bytes)
        )


def structural_row(config: ModelConfig, mode: CountMode) -> SplitPointRow:
    """Everything that follows from a split model's config alone."""
    geometry = config.geometry()
    # FLOPs are counted per time step, so a one-step head gives the same count at 1/T of the work
    # (on the meta device every elementwise op of the LIF loop is a Python shape computation)
    with torch.device("meta"):
        head = SplitHead(replace(config, time_steps=1))
    flops = structural_flops(head, 1, config.backbone.image_size, mode)
    return SplitPointRow(
        arch=config.backbone.arch,
        split_point=geometry.point.index,
        split_point_name=geometry.point.name,
        time_steps=config.time_steps,
        spike_shape=geometry.spike_shape,
        transmitted_bytes=geometry.transmitted_bytes,
        compression_ratio=geometry.compression,
        float32_feature_bytes=geometry.float32_feature_bytes,
        flops=flops,
        ann_baseline_45nm_mj=flops * E_MAC_45NM_PJ / PJ_PER_MJ,
        bottlenetpp_bytes=config.backbone.bottlenetpp_bytes(geometry.point.index),
    )


def measure(head: SplitHead, images: torch.Tensor, mode: CountMode) -> Measured:
    """Run the head on normalized images [N, 3, H, W] and average the per-image energy estimates."""
    estimates = []
    with torch.inference_mode():
        for batch in images.split(BATCH_SIZE):
            with ActivityMonitor(head, head.time_steps, mode) as monitor:
                head(batch)
            estimates += monitor.estimates()
    mean = EnergyEstimate.mean(estimates)
    return Measured(mean.firing_rate, mean.syops, mean.device_45nm_mj, mean.device_rolls_mj)


def preset_configs(arch: str, width: float, classes: int) -> list[ModelConfig]:
    """The paper's bottleneck at every split point of ``arch``, at the given width and classes."""
    backbone = backbone_config(arch, width_multiplier=width, num_classes=classes)
    return [
        ModelConfig(backbone=backbone).with_split(backbone.bottleneck_preset(p.index)) for p in backbone.split_points()
    ]


# ---------------------------------------------------------------------------------------------
# output


def millions(value: float) -> str:
    """1178599424 -> '1,178.60'."""
    return f"{value / 1e6:,.2f}"


def render_table(header: list[str], lines: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return [
        "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True)) for cells in [header, *lines]
    ]


def table(rows: list[SplitPointRow], config: ModelConfig, mode: CountMode, link: LinkProfile) -> str:
    backbone = config.backbone
    # BottleNet++'s bytes are the paper's: they exist only for the paper's full-width Spike ResNet50
    with_bottlenetpp = rows[0].bottlenetpp_bytes is not None
    header = ["split", "T", "spikes C'xH'xW'", "bits", "bytes"]
    header += ["BN++ bytes"] if with_bottlenetpp else []
    header += ["compression", "float32 B", "FLOPs (M)", "ANN mJ", "tx ms", "tx mJ"]
    measured = rows[0].measured is not None
    if measured:
        header += ["fire rate", "SyOPs (M)", "SNN 45nm mJ", "ROLLS mJ", "ANN/45nm", "ANN/ROLLS", "device total mJ"]
    lines = []
    for row in rows:
        t, c, h, w = row.spike_shape
        cells = [row.split_point_name, str(t), f"{c}x{h}x{w}", f"{t * c * h * w:,}", f"{row.transmitted_bytes:,}"]
        cells += [f"{row.bottlenetpp_bytes:,}"] if with_bottlenetpp else []
        cells += [
            f"{row.compression_ratio:g}x",
            f"{row.float32_feature_bytes:,}",
            millions(row.flops),
            f"{row.ann_baseline_45nm_mj:.4g}",
            f"{link.transmit_ms(row.transmitted_bytes):.4g}",
            f"{link.transmit_mj(row.transmitted_bytes):.4g}",
        ]
        if row.measured:
            m = row.measured
            cells += [
                f"{m.firing_rate:.4f}",
                f"{m.syops / 1e6:.4g}",
                f"{m.device_45nm_mj:.4g}",
                f"{m.device_rolls_mj:.4g}",
                f"{row.ann_baseline_45nm_mj / m.device_45nm_mj:.1f}x",
                f"{row.ann_baseline_45nm_mj / m.device_rolls_mj:.1f}x",
                f"{row.device_total_mj(link):.4g}",
            ]
        lines.append(cells)
    title = (
        f"{backbone.arch}, width x{backbone.width_multiplier:g}, {backbone.num_classes} classes, "
        f"{backbone.image_size}x{backbone.image_size} input; per image; FLOPs counted in {mode.value} mode"
    )
    notes = [
        "compression: the block's own T*C*H*W spike bits / transmitted bytes; float32 B: an ANN's C*H*W*4 feature",
        "ANN mJ: FLOPs x 4.6 pJ (45 nm MAC)",
        f"tx: sending the bytes on {link.name} ({link.rate_mbps:g} Mbps at {link.power_mw:.1f} mW, BottleNet's "
        f"uplink figures)",
    ]
    if with_bottlenetpp:
        notes.append("BN++ bytes: BottleNet++ at the same point, from the paper's Table 1")
    if measured:
        notes.append(
            "SNN: SyOPs x 0.9 pJ (45 nm) or x 77 fJ (ROLLS), averaged over the images; device total: SNN 45 nm + tx"
        )
    return "\n".join([title, "", *render_table(header, lines), "", *notes])


def comparison(by_arch: dict[str, list[SplitPointRow]], width: float, mode: CountMode) -> str:
    """The backbones side by side, row i holding each one's i-th split point."""
    archs = list(by_arch)
    header = ["k"] + [
        f"{column}" for _ in archs for column in ("split", "C'xH'xW'", "T", "bytes", "compr.", "FLOPs (M)", "ANN mJ")
    ]
    lines = []
    for i in range(max(len(rows) for rows in by_arch.values())):
        cells = [str(i + 1)]
        for arch in archs:
            rows = by_arch[arch]
            if i >= len(rows):
                cells += [""] * 7
                continue
            row = rows[i]
            t, c, h, w = row.spike_shape
            cells += [
                row.split_point_name,
                f"{c}x{h}x{w}",
                str(t),
                f"{row.transmitted_bytes:,}",
                f"{row.compression_ratio:g}x",
                millions(row.flops),
                f"{row.ann_baseline_45nm_mj:.4g}",
            ]
        lines.append(cells)
    title = (
        f"{' | '.join(archs)}: the paper's bottleneck at every split point, width x{width:g}; per image; "
        f"FLOPs (device layers up to the split point) counted in {mode.value} mode"
    )
    return "\n".join([title, "", *render_table(header, lines), "", "ANN mJ: FLOPs x 4.6 pJ (45 nm MAC)"])


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=["paper"],
        help="the paper's bottleneck at every split point (the default without --checkpoint)",
    )
    parser.add_argument("--arch", choices=ARCH_CHOICES, help=f"backbone for the preset (default: {DEFAULT_ARCH})")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="every backbone's preset side by side: bytes, FLOPs and ANN energy per split point",
    )
    parser.add_argument("--width", type=float, help="backbone width multiplier for the preset (default 1.0)")
    parser.add_argument("--classes", type=int, help="number of classes for the preset (default 100)")
    parser.add_argument("--checkpoint", type=Path, help="report this checkpoint's split point instead")
    parser.add_argument(
        "--images",
        type=Path,
        nargs="+",
        metavar="IMAGE",
        help="with --checkpoint: measure firing rate, SyOPs and energy on these image files",
    )
    parser.add_argument(
        "--mode",
        choices=[m.value for m in CountMode],
        default=CountMode.PAPER.value,
        help="paper: block convs only, as the paper counts; complete: also stem, shortcuts, encoder",
    )
    parser.add_argument(
        "--link",
        choices=list(LINK_PROFILES),
        default=DEFAULT_LINK,
        help=f"uplink for the transmit columns (BottleNet's measured figures; default: {DEFAULT_LINK})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list, one object per split point (with --compare: of every backbone)",
    )


def run(args: argparse.Namespace) -> int:
    mode = CountMode(args.mode)
    if args.checkpoint and (
        args.preset or args.arch or args.compare or args.width is not None or args.classes is not None
    ):
        return fail(
            "a checkpoint carries its own config: --preset, --arch, --compare, --width and --classes go "
            "without --checkpoint",
            2,
        )
    if args.compare and args.arch:
        return fail("--compare shows every backbone: leave out --arch", 2)
    if args.images and not args.checkpoint:
        return fail("--images needs --checkpoint: the head whose spikes are measured", 2)
    if (args.width is not None and args.width <= 0) or (args.classes is not None and args.classes < 1):
        return fail("--width must be > 0 and --classes >= 1", 2)
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
        width, classes = 1.0 if args.width is None else args.width, 100 if args.classes is None else args.classes
        archs = list(BACKBONES) if args.compare else [args.arch or DEFAULT_ARCH]
        by_arch = {arch: [structural_row(c, mode) for c in preset_configs(arch, width, classes)] for arch in archs}
        rows = [row for arch_rows in by_arch.values() for row in arch_rows]
        if args.compare and not args.json:
            print(comparison(by_arch, width, mode))
            return 0
        config = preset_configs(archs[0], width, classes)[0]
    link = link_profile(args.link)
    print(json.dumps([row.to_json(link) for row in rows], indent=2) if args.json else table(rows, config, mode, link))
    return 0


def read_image(path: Path, config: ModelConfig) -> torch.Tensor:
    try:
        return torch.from_numpy(load_image(path.read_bytes(), config))
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror}") from None
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None


def fail(message: str, code: int) -> int:
    print(f"sbn report: error: {message}", file=sys.stderr)
    return code
