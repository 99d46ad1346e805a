"""``sbn plan``: which split point to run for a link, from costs measured on this machine.

    sbn plan --link 3g                                   # every embedded demo model, latency objective
    sbn plan --bandwidth-mbps 0.2 --rtt-ms 40 --objective energy --json
    sbn plan --plot plan.png                             # latency and energy per split point on 3G, 4G, Wi-Fi

Both halves of every model are loaded here and timed on one image (this machine standing in for the
device and for the edge: on a real deployment the device measures its own heads at start-up and asks
the edge for its times, see device/model_set.py); energy is the head's at 45 nm from the spikes of a
seeded input; accuracy drops come from the checkpoints. The planner itself is device/planner.py, the
same function ``/classify?split_point=auto`` calls.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.device.model_set import measure_costs
from spikebottlenet.device.planner import Objective, Plan, SplitProfile, plan
from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.shared.checkpoint_metadata import embedded_models
from spikebottlenet.shared.radio import DEFAULT_LINK, LINK_PROFILES, link_profile
from spikebottlenet.shared.torch_runtime import configure_torch_threads

from .report import render_table


def measure_profiles(checkpoints: list[Path]) -> list[SplitProfile]:
    """Each checkpoint's split point, its head and tail timed on this machine."""
    profiles = []
    for path in checkpoints:
        head = HeadRunner.load(path)
        head.warm_up()
        costs = measure_costs(head)
        tail = TailRunner.load(path, max_batch=1)
        tail.warm_up()
        checkpoint = head.checkpoint
        drop = checkpoint.info.accuracy_drop if checkpoint.info_verified else None
        profiles.append(
            SplitProfile(
                checkpoint.config.backbone.arch,
                head.split_point.index,
                head.split_point.name,
                costs.device_ms,
                costs.device_mj,
                round(costs.message_bytes),
                tail.inference_ms,
                None if drop is None else float(drop),
            )
        )
    return profiles


def render(result: Plan) -> str:
    header = [
        "arch",
        "split",
        "bytes",
        "device ms",
        "edge ms",
        "tx ms",
        "latency ms",
        "device mJ",
        "tx mJ",
        "energy mJ",
        "drop",
        "",
    ]
    lines = []
    for e in result.estimates:
        p = e.profile
        mark = "<- choice" if e is result.choice else "" if e.eligible else "(over the accuracy budget)"
        lines.append(
            [
                p.arch,
                p.split_point_name,
                f"{p.message_bytes}",
                f"{p.device_ms:.2f}",
                f"{p.edge_ms:.2f}",
                f"{e.transmit_ms:.3f}",
                f"{e.latency_ms:.2f}",
                f"{p.device_mj:.3g}",
                f"{e.transmit_mj:.3g}",
                f"{e.energy_mj:.3g}",
                "-" if p.accuracy_drop is None else f"{p.accuracy_drop:+.2f}",
                mark,
            ]
        )
    link = result.link
    title = (
        f"link {link.name}: {link.rate_mbps:g} Mbps, round trip {link.rtt_ms:g} ms, radio {link.power_mw:.1f} mW; "
        f"objective {result.objective.value}"
    )
    notes = [
        "latency = device + bytes / rate + round trip + edge; energy = device (45 nm, measured spikes) + "
        "radio power x transmit time",
        "device and edge ms: measured on this machine, one image",
    ]
    return "\n".join([title, "", *render_table(header, lines), "", *notes])


def to_json(result: Plan) -> dict:
    return {
        "link": vars(result.link),
        "objective": result.objective.value,
        "choice": {"arch": result.choice.profile.arch, "split_point": result.choice.profile.split_point},
        "split_points": [
            {
                **vars(e.profile),
                "transmit_ms": e.transmit_ms,
                "latency_ms": e.latency_ms,
                "transmit_mj": e.transmit_mj,
                "energy_mj": e.energy_mj,
                "eligible": e.eligible,
                "chosen": e is result.choice,
            }
            for e in result.estimates
        ],
    }


def draw(profiles: list[SplitProfile], path: Path, max_accuracy_drop: float | None) -> None:
    """Latency and energy against split point on each named link, one line per link and backbone."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("sbn plan --plot needs matplotlib: pip install matplotlib") from None
    figure, (latency_axis, energy_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    archs = sorted({p.arch for p in profiles})
    for name, link in LINK_PROFILES.items():
        for arch, style in zip(archs, ("-o", "--s"), strict=False):
            rows = sorted((p for p in profiles if p.arch == arch), key=lambda p: p.split_point)
            result = plan(rows, link, Objective.LATENCY)
            points = [e.profile.split_point for e in result.estimates]
            label = f"{name}, {arch.removeprefix('spiking_')}"
            latency_axis.plot(points, [e.latency_ms for e in result.estimates], style, label=label)
            energy_axis.plot(points, [e.energy_mj for e in result.estimates], style, label=label)
    for axis, what in ((latency_axis, "latency per image (ms)"), (energy_axis, "device energy per image (mJ)")):
        axis.set_xlabel("split point k (the bottleneck after block k)")
        axis.set_ylabel(what)
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    energy_axis.legend(fontsize=7)
    budget = "" if max_accuracy_drop is None else f"; auto only picks drops <= {max_accuracy_drop:g} points"
    figure.suptitle(f"Split points on BottleNet's uplinks (compute measured on this machine{budget})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help="a split checkpoint to consider (repeatable; default: every embedded demo model)",
    )
    parser.add_argument(
        "--link",
        choices=list(LINK_PROFILES),
        default=DEFAULT_LINK,
        help=f"BottleNet's measured uplink: rate and radio power (default: {DEFAULT_LINK})",
    )
    parser.add_argument("--bandwidth-mbps", type=float, help="a custom uplink rate (on --link's radio power model)")
    parser.add_argument("--rtt-ms", type=float, help="a custom round trip (default: the link's)")
    parser.add_argument("--objective", choices=[o.value for o in Objective], default=Objective.LATENCY.value)
    parser.add_argument("--latency-weight", type=float, default=0.5, help="the mix objective's weight of latency")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=3.0,
        help="only split points losing at most this many points (default: 3, the paper's rule)",
    )
    budget.add_argument(
        "--no-accuracy-budget",
        dest="max_accuracy_drop",
        action="store_const",
        const=None,
        help="consider every split point, whatever its accuracy drop (or none recorded)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the measurements (default: 1)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="also draw latency and energy per split point on 3G, 4G and Wi-Fi (matplotlib)",
    )


def run(args: argparse.Namespace) -> int:
    if (args.bandwidth_mbps is not None and args.bandwidth_mbps <= 0) or (args.rtt_ms is not None and args.rtt_ms < 0):
        print("sbn plan: error: --bandwidth-mbps must be > 0 and --rtt-ms >= 0", file=sys.stderr)
        return 2
    configure_torch_threads(args.threads)
    profiles = measure_profiles(args.checkpoint or [info.path for info in embedded_models()])
    link = link_profile(args.link, args.bandwidth_mbps, args.rtt_ms)
    result = plan(profiles, link, args.objective, args.max_accuracy_drop, args.latency_weight)
    print(json.dumps(to_json(result), indent=2) if args.json else render(result))
    if args.plot:
        draw(profiles, args.plot, args.max_accuracy_drop)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
