"""Spike codec speed and size: ours (shared.codec) against bare numpy.packbits / unpackbits.

    python bench/codec_bench.py                       # the paper's largest frame at 1%, 5%, 20% firing
    python bench/codec_bench.py --rates 0.02 0.5 --number 500 --json

The frame is the paper preset's largest, RB1: T=4 x C'=16 x 32 x 32 bits of one image, shaped
(T, B, C', H', W') = (4, 1, 16, 32, 32) as the device sends it. Each path starts and ends where the
runtime does:

    raw pack        encode(..., assume_binary=True) of the bool tensor the encoder's LIF emits in
                    inference (binary by construction)
    checked pack    encode's default on a float32 tensor of 0/1, which also proves it binary, as for a
                    tensor from outside
    raw unpack      decode(..., dtype=torch.bool): the bools the edge hands its decoder
    f32 unpack      decode's float32 default, for callers that want numbers
    to float        the bools to float32, which the decoder's transposed conv does before it runs: the
                    conversion the bool path leaves out of the codec, shown so nothing hides

numpy packs a flat uint8 array of 0/1 and unpacks to one. Every ratio is ours / numpy, both timed in
the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable

import numpy as np
import torch

from spikebottlenet.shared.codec import encode
from spikebottlenet.shared.spike_tensors import decode

FRAME = (4, 1, 16, 32, 32)


def per_call_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best of `repeat` runs of `number` calls, per call, in microseconds (timeit's convention)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def time_rate(rate: float, rng: np.random.Generator, number: int, repeat: int) -> dict[str, float]:
    """Sizes and timings of one frame firing at ``rate``; raises if any codec does not round-trip."""
    n = int(np.prod(FRAME))
    spikes = torch.from_numpy(rng.random(FRAME) < rate)  # [T, B, C', H', W'] bool, as the encoder's LIF emits
    numbers = spikes.float()  # the same spikes as float32 0/1, as a tensor from outside might come
    bits = spikes.numpy().astype(np.uint8).reshape(-1)  # numpy's input: already flat 0/1 bytes
    _, raw = encode(spikes, "raw")
    _, sparse = encode(spikes, "sparse")
    packed = np.frombuffer(raw, dtype=np.uint8)
    if not (
        torch.equal(decode(raw, FRAME, "raw", torch.bool), spikes)
        and torch.equal(decode(raw, FRAME, "raw"), numbers)
        and torch.equal(decode(sparse, FRAME, "sparse", torch.bool), spikes)
        and encode(numbers, "raw")[1] == raw
    ):
        raise RuntimeError(f"the codec does not round-trip a frame firing at {rate:.0%}")

    us = {
        name: per_call_us(fn, number, repeat)
        for name, fn in {
            "numpy_pack": lambda: np.packbits(bits),
            "raw_pack": lambda: encode(spikes, "raw", assume_binary=True),
            "checked_pack": lambda: encode(numbers, "raw"),
            "sparse_pack": lambda: encode(spikes, "sparse", assume_binary=True),
            "numpy_unpack": lambda: np.unpackbits(packed, count=n),
            "raw_unpack": lambda: decode(raw, FRAME, "raw", torch.bool),
            "f32_unpack": lambda: decode(raw, FRAME, "raw"),
            "sparse_unpack": lambda: decode(sparse, FRAME, "sparse", torch.bool),
            "to_float": lambda: spikes.view(torch.uint8).to(torch.float32),  # as SpikeDecoder widens them
        }.items()
    }
    ratios = {f"{name}_ratio": us[name] / us["numpy_pack"] for name in ("raw_pack", "checked_pack", "sparse_pack")}
    ratios |= {
        f"{name}_ratio": us[name] / us["numpy_unpack"]
        for name in ("raw_unpack", "f32_unpack", "sparse_unpack", "to_float")
    }
    sizes = {"rate": rate, "raw_bytes": len(raw), "sparse_bytes": len(sparse)}
    return sizes | {f"{name}_us": value for name, value in us.items()} | ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.2], help="firing rates")
    parser.add_argument("--number", type=int, default=200, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: a frame is too small to share, and idle OpenMP "
        "threads on a busy machine make the tensor conversions erratic)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    rows = [time_rate(rate, rng, args.number, args.repeat) for rate in args.rates]
    if args.json:
        print(
            json.dumps(
                {
                    "frame": list(FRAME),
                    "threads": args.threads,
                    "number": args.number,
                    "repeat": args.repeat,
                    "numpy": np.__version__,
                    "torch": torch.__version__,
                    "rates": rows,
                },
                indent=2,
            )
        )
        return 0

    print(
        f"frame {FRAME} = {int(np.prod(FRAME)):,} bits; microseconds per frame, best of {args.repeat} x "
        f"{args.number}, {args.threads} torch thread(s)"
    )
    header = (
        f"{'rate':>5} {'raw B':>6} {'sparse B':>8} | {'pack: numpy':>11} {'raw':>13} {'checked':>13} "
        f"{'sparse':>13} | {'unpack: numpy':>13} {'raw':>13} {'f32':>13} {'sparse':>13} {'to float':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:

        def ours(name: str, r: dict[str, float] = r) -> str:
            return f"{r[f'{name}_us']:.1f} ({r[f'{name}_ratio']:.1f}x)"

        print(
            f"{r['rate']:>5.0%} {r['raw_bytes']:>6,} {r['sparse_bytes']:>8,} | {r['numpy_pack_us']:>11.1f} "
            f"{ours('raw_pack'):>13} {ours('checked_pack'):>13} {ours('sparse_pack'):>13} | "
            f"{r['numpy_unpack_us']:>13.1f} {ours('raw_unpack'):>13} {ours('f32_unpack'):>13} "
            f"{ours('sparse_unpack'):>13} {ours('to_float'):>13}"
        )
    print("(Nx): / numpy, same run.  sparse: bitarray's sc_encode / sc_decode of the same bit sequence")
    return 0


if __name__ == "__main__":
    sys.exit(main())
