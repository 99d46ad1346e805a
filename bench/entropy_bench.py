"""Bytes per image of every codec on the shipped demo models, next to the entropy bound, and the
entropy codec's time per frame.

    python -m bench.entropy_bench [--chunks 4] [--json]

For each embedded model: the head runs on the digits test split (which its context model never
saw: it was fitted on the training split), and each image's frame is packed by raw, sparse, entropy
and auto. Reported per image: the mean payload of each, the first-order bound H(s_t | s_t−1, channel)
of the test spikes (the empirical entropy a coder using the neuron's own previous step approaches),
entropy / bound, the entropy payload in ``--chunks`` independently decodable chunks where the
model's frames can be cut so (what losing less to a damaged byte costs), and the median encode +
decode time of one frame (1 torch thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
from time import perf_counter

import numpy as np
import torch

from spikebottlenet.sbn.report import render_table
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import embedded_models
from spikebottlenet.shared.codec import Codec, encode
from spikebottlenet.shared.entropy_codec import (
    EntropyCodecError,
    chunk_layout,
    conditional_entropy_bits,
    own_step_counts,
)
from spikebottlenet.shared.spike_tensors import decode
from spikebottlenet.training.datasets import load_digits
from spikebottlenet.training.entropy_fit import transmitted_spikes
from spikebottlenet.training.runtime import start

TIMED_FRAMES = 200


def measure_model(info, data, runtime, chunks: int) -> dict:  # type: ignore[no-untyped-def]
    loaded = load_checkpoint(info.path, "head")
    model = loaded.checkpoint.config.spike_model()
    test = transmitted_spikes(loaded.model, data.test.images, data, runtime)  # [T, N, C', H', W']
    frames = [test[:, i : i + 1] for i in range(test.shape[1])]
    sizes = {
        codec: statistics.mean(len(encode(f, codec, model=model)[1]) for f in frames)
        for codec in ("raw", "sparse", "auto") + (("entropy",) if model else ())
    }
    row = {
        "model": f"{loaded.checkpoint.config.backbone.arch} {loaded.checkpoint.config.split_point.name}",
        "bits": int(np.prod(frames[0].shape)),
        "test_images": len(frames),
        **{f"{codec}_bytes": round(size, 2) for codec, size in sizes.items()},
        "bound_bytes": round(conditional_entropy_bits(own_step_counts(test)) / len(frames) / 8, 2),
    }
    if model is not None:
        row["entropy_over_bound"] = round(sizes["entropy"] / row["bound_bytes"], 3)
        try:
            chunk_layout(model.channels, frames[0].shape[3], chunks)
        except EntropyCodecError:
            pass  # this model's frames cannot be cut into that many chunks
        else:
            row[f"entropy_{chunks}_chunks_bytes"] = round(
                statistics.mean(len(encode(f, Codec.ENTROPY, model=model, chunks=chunks)[1]) for f in frames), 2
            )
        times = []
        for frame in frames[:TIMED_FRAMES]:
            spikes = torch.from_numpy(frame.astype(np.float32))
            start_time = perf_counter()
            used, payload = encode(spikes, Codec.ENTROPY, assume_binary=True, model=model)  # raw where shorter
            decode(payload, tuple(spikes.shape), used, model=model)
            times.append((perf_counter() - start_time) * 1e6)
        row["entropy_encode_decode_us"] = round(statistics.median(times), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=4, help="chunks of the chunked entropy column (default 4)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runtime = start("fp32", "cpu")
    datasets = {style: load_digits(style) for style in ("digits", "natural")}
    rows = [measure_model(info, datasets[info.config.input_style], runtime, args.chunks) for info in embedded_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = [
        "model",
        "bits",
        "raw B",
        "sparse B",
        "entropy B",
        "auto B",
        "bound B",
        "entropy/bound",
        f"entropy, {args.chunks} chunks B",
        "enc+dec us",
    ]
    lines = [
        [
            r["model"],
            str(r["bits"]),
            f"{r['raw_bytes']:g}",
            f"{r['sparse_bytes']:g}",
            f"{r.get('entropy_bytes', '-')}",
            f"{r['auto_bytes']:g}",
            f"{r['bound_bytes']:g}",
            f"{r.get('entropy_over_bound', '-')}",
            f"{r.get(f'entropy_{args.chunks}_chunks_bytes', '-')}",
            f"{r.get('entropy_encode_decode_us', '-')}",
        ]
        for r in rows
    ]
    print("\n".join(render_table(header, lines)))
    print(
        f"\nmeans per test image of the digits ({rows[0]['test_images']}); bound: the empirical H(s_t | s_t-1, "
        f"channel) of the test spikes; enc+dec: median of {TIMED_FRAMES} frames, 1 thread"
    )


if __name__ == "__main__":
    main()
