"""Spike codec speed and size: ours (shared.codec) against bare numpy.packbits / unpackbits.

    python bench/codec_bench.py                       # the paper's largest frame at 1%, 5%, 20% firing
    python bench/codec_bench.py --rates 0.02 0.5 --number 500

The frame is the paper preset's largest, RB1: T=4 x C'=16 x 32 x 32 bits of one image, shaped
(T, B, C', H', W') = (4, 1, 16, 32, 32) as the device sends it. "Ours" starts from what the head
produces (a float32 tensor of 0/1) and includes the binary check; numpy starts from a uint8 array
that is already flat 0/1, so the ratio ours/numpy is the price of that conversion and checking.
Decoding ends in a float32 tensor of the frame's shape (what the tail takes) for ours, and in a
flat uint8 array for numpy.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable

import numpy as np
import torch

from shared.codec import decode, encode

FRAME = (4, 1, 16, 32, 32)


def per_call_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best of `repeat` runs of `number` calls, per call, in microseconds (timeit's convention)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.2], help="firing rates")
    parser.add_argument("--number", type=int, default=200, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: a frame is too small to share, and idle OpenMP "
                             "threads on a busy machine make the tensor conversions erratic)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    n = int(np.prod(FRAME))
    print(f"frame {FRAME} = {n:,} bits; microseconds per frame, best of {args.repeat} x {args.number}, "
          f"{args.threads} torch thread(s)")
    header = (f"{'rate':>5} {'raw B':>6} {'sparse B':>8} | {'pack: numpy':>11} {'ours raw':>15} "
              f"{'ours sparse':>15} | {'unpack: numpy':>13} {'ours raw':>15} {'ours sparse':>15}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(args.seed)
    for rate in args.rates:
        spikes = torch.from_numpy(rng.random(FRAME) < rate).float()  # [T, B, C', H', W'] as the head emits
        bits = spikes.numpy().astype(np.uint8).reshape(-1)  # numpy's input: already flat 0/1 bytes
        _, raw = encode(spikes, "raw")
        _, sparse = encode(spikes, "sparse")
        packed = np.frombuffer(raw, dtype=np.uint8)
        assert torch.equal(decode(raw, FRAME, "raw"), spikes) and torch.equal(decode(sparse, FRAME, "sparse"), spikes)

        us = {name: per_call_us(fn, args.number, args.repeat) for name, fn in {
            "numpy pack": lambda: np.packbits(bits),
            "raw pack": lambda: encode(spikes, "raw"),
            "sparse pack": lambda: encode(spikes, "sparse"),
            "numpy unpack": lambda: np.unpackbits(packed, count=n),
            "raw unpack": lambda: decode(raw, FRAME, "raw"),
            "sparse unpack": lambda: decode(sparse, FRAME, "sparse"),
        }.items()}

        def ours(name: str, numpy: str) -> str:
            return f"{us[name]:.1f} ({us[name] / us[numpy]:.1f}x)"

        print(f"{rate:>5.0%} {len(raw):>6,} {len(sparse):>8,} | {us['numpy pack']:>11.1f} "
              f"{ours('raw pack', 'numpy pack'):>15} {ours('sparse pack', 'numpy pack'):>15} | "
              f"{us['numpy unpack']:>13.1f} {ours('raw unpack', 'numpy unpack'):>15} "
              f"{ours('sparse unpack', 'numpy unpack'):>15}")
    print("(Nx): ours / numpy.  sparse: bitarray's sc_encode / sc_decode of the same bit sequence")
    return 0


if __name__ == "__main__":
    sys.exit(main())
