"""Bytes per image of every codec on the shipped demo models, next to three entropy bounds, and the
entropy codec's time per frame.

    python -m bench.entropy_bench [--chunks 4] [--images N] [--json]

For each embedded model: the head runs on its dataset's test split (which its context model never
saw: it was fitted on the training split), and each image's frame is packed by raw, sparse, entropy
and auto. Reported per image: the mean payload of each; three empirical conditional entropies of the
test spikes, each the bound a coder using those contexts approaches on them:

    first order   H(s_t | s_t−1, channel): the neuron's own previous step
    codec         H(s_t | the codec's context, channel): its own step before and its neighbours' then
    richest       H(s_t | the codec's context, the previous channel's bit at the same place and step,
                  how many of the 4 causal neighbours (left, and the row above) fired at this step, channel)

entropy / codec bound and entropy / richest bound, the entropy payload in ``--chunks`` independently
decodable chunks where the model's frames can be cut so (what losing less to a damaged byte costs),
and the median encode + decode time of one frame (1 torch thread).
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
    contexts,
    own_step_counts,
    transition_counts,
)
from spikebottlenet.shared.spike_tensors import decode
from spikebottlenet.training.datasets import load_dataset
from spikebottlenet.training.entropy_fit import transmitted_spikes
from spikebottlenet.training.runtime import start

TIMED_FRAMES = 200
CAUSAL_BUCKETS = 3  # 0, 1, 2 or more of the 4 causal neighbours fired


def richest_counts(bits: np.ndarray) -> np.ndarray:
    """[C, contexts, 2]: 0s and 1s of ``bits`` [T, B, C, H, W] per channel and richest context (the module's
    docstring): codec context x previous channel's bit at t (0, 1, none for the first channel) x causal bucket."""
    height, width = bits.shape[-2:]
    own = contexts(bits)  # the codec's context of every bit
    previous_channel = np.full(bits.shape, 2, dtype=np.intp)
    previous_channel[:, :, 1:] = bits[:, :, :-1]
    padded = np.pad(bits.astype(np.intp), [(0, 0)] * 3 + [(1, 0), (1, 1)])  # a row above, a column either side
    causal = (
        padded[..., 1:, :width]  # left
        + padded[..., :height, :width]  # up-left
        + padded[..., :height, 1 : width + 1]  # up
        + padded[..., :height, 2 : width + 2]  # up-right
    )
    context = (own * 3 + previous_channel) * CAUSAL_BUCKETS + np.minimum(causal, CAUSAL_BUCKETS - 1)
    per_channel = int(context.max()) + 1
    channel = np.arange(bits.shape[2])[None, None, :, None, None]
    index = (channel * per_channel + context) * 2 + bits
    return np.bincount(index.reshape(-1), minlength=bits.shape[2] * per_channel * 2).reshape(-1, per_channel, 2)


def measure_model(info, data, runtime, chunks: int, images: int) -> dict:  # type: ignore[no-untyped-def]
    loaded = load_checkpoint(info.path, "head")
    model = loaded.checkpoint.config.spike_model()
    test = transmitted_spikes(loaded.model, data.test.images[:images], data, runtime)  # [T, N, C', H', W']
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
        **{
            f"{name}_bound_bytes": round(conditional_entropy_bits(counts(test)) / len(frames) / 8, 2)
            for name, counts in (
                ("first_order", own_step_counts),
                ("codec", transition_counts),
                ("richest", richest_counts),
            )
        },
    }
    if model is not None:
        row["entropy_over_codec_bound"] = round(sizes["entropy"] / row["codec_bound_bytes"], 3)
        row["entropy_over_richest_bound"] = round(sizes["entropy"] / row["richest_bound_bytes"], 3)
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
    parser.add_argument("--images", type=int, default=None, help="the first N test images (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runtime = start("fp32", "cpu")
    datasets = {}
    rows = []
    for info in embedded_models():
        name = info.info.dataset
        if name not in datasets:
            datasets[name] = load_dataset(name, input_style=info.config.input_style)
        rows.append(measure_model(info, datasets[name], runtime, args.chunks, args.images))
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
        "1st-order B",
        "codec bound B",
        "richest B",
        "entropy/codec",
        "entropy/richest",
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
            f"{r['first_order_bound_bytes']:g}",
            f"{r['codec_bound_bytes']:g}",
            f"{r['richest_bound_bytes']:g}",
            f"{r.get('entropy_over_codec_bound', '-')}",
            f"{r.get('entropy_over_richest_bound', '-')}",
            f"{r.get(f'entropy_{args.chunks}_chunks_bytes', '-')}",
            f"{r.get('entropy_encode_decode_us', '-')}",
        ]
        for r in rows
    ]
    print("\n".join(render_table(header, lines)))
    print(
        f"\nmeans per test image ({rows[0]['test_images']}); bounds: empirical conditional entropies of the test "
        f"spikes (the module's docstring); enc+dec: median of {TIMED_FRAMES} frames, 1 thread"
    )


if __name__ == "__main__":
    main()
