"""``sbn eval``: test accuracy of a split model when its frames cross a lossy channel.

    sbn eval --channel bsc:1e-2 --codec raw                  # the embedded RB8 demo, digits test split
    sbn eval --split-point 3 --channel gilbert:0.01,0.3,0.1 --codec entropy --json
    sbn eval --split-point 3 --channel bsc:1e-3 --codec entropy --chunks 8 --fec 16

Each test image runs through the head; its frame is packed with the codec (an entropy payload in
``--chunks`` independently decodable chunks), protected with ``--fec`` Reed–Solomon parity bytes per
block if asked (shared/fec.py), sent through the channel (shared/channel.py), repaired and unpacked at
the other end (an entropy chunk failing its CRC is erased: its channels silent) and run through the
tail. Reported: accuracy with and without the channel, chunks erased, the channel's measured bit error
rate, bytes per frame on the wire and before the parity.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np
import torch

from spikebottlenet.shared.channel import parse_channel
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import CheckpointError
from spikebottlenet.shared.codec import CODEC_CHOICES, Codec, encode
from spikebottlenet.shared.fec import protect, recover
from spikebottlenet.shared.model_arguments import add_model_arguments, chosen_checkpoint
from spikebottlenet.shared.spike_tensors import receive
from spikebottlenet.shared.split_model import SpikeBottleNet

from .datasets import load_dataset
from .entropy_fit import BATCH


def evaluate(
    path: str | os.PathLike,
    channel_spec: str,
    codec: str,
    seed: int = 0,
    chunks: int = 1,
    fec_parity: int = 0,
    test_images: int | None = None,
) -> dict[str, Any]:
    """The figures ``sbn eval`` prints, for the split checkpoint ``path`` on its dataset's test split (its
    first ``test_images``, where given)."""
    loaded = load_checkpoint(path)
    if not isinstance(loaded.model, SpikeBottleNet):
        raise CheckpointError(f"{path} is a backbone checkpoint: it sends no frames to evaluate")
    config = loaded.config
    # only the test images are needed: normalized as the checkpoint says (its training split's statistics)
    data = load_dataset(
        loaded.checkpoint.info.dataset or "digits",
        None,
        config.input_style,
        subset=None if test_images is None else (1, test_images),
    )
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    channel = parse_channel(channel_spec)
    model, rng = config.spike_model(), np.random.default_rng(seed)
    right = clean_right = erased = chunks_sent = flipped = sent_bits = payload_bytes = coded_bytes = 0
    loaded.model.eval()
    with torch.inference_mode():
        for images, labels in zip(data.test.images.split(BATCH), data.test.labels.split(BATCH), strict=True):
            spikes = loaded.model.head((images.float() / 255 - mean) / std)  # [T, B, C', H', W']
            clean_right += int((loaded.model.tail(spikes).argmax(1) == labels).sum())
            received = []
            for b in range(spikes.shape[1]):
                frame = spikes[:, b : b + 1]
                used, payload = encode(frame, codec, assume_binary=True, model=model, chunks=chunks)
                sent = protect(payload, fec_parity)
                delivery = channel.apply(sent, rng)
                damaged = np.frombuffer(delivery.payload, np.uint8)
                flipped += int(np.unpackbits(np.frombuffer(sent, np.uint8) ^ damaged).sum())
                sent_bits, payload_bytes, coded_bytes = (
                    sent_bits + 8 * len(sent),
                    payload_bytes + len(sent),
                    coded_bytes + len(payload),
                )
                frame_received = receive(
                    recover(delivery.payload, fec_parity, delivery.lost).payload,
                    tuple(frame.shape),
                    used,
                    model,
                    chunks if used is Codec.ENTROPY else 1,
                )
                received.append(frame_received.spikes)
                erased, chunks_sent = erased + frame_received.erased_chunks, chunks_sent + frame_received.chunks
            right += int((loaded.model.tail(torch.cat(received, dim=1)).argmax(1) == labels).sum())
    n = len(data.test)
    return {
        "model": f"{config.backbone.arch} {config.split_point.name}",
        "channel": channel_spec,
        "codec": codec,
        "chunks": chunks,
        "fec_parity_bytes": fec_parity,
        "test_images": n,
        "accuracy": 100 * right / n,
        "clean_accuracy": 100 * clean_right / n,
        "erased_chunks": erased,
        "chunks_sent": chunks_sent,
        "measured_ber": flipped / sent_bits,
        "mean_payload_bytes": payload_bytes / n,
        "mean_coded_bytes": coded_bytes / n,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, "evaluate")
    parser.add_argument(
        "--channel",
        required=True,
        help="bsc:BER, erasure:P or gilbert:P_GB,P_BG,BER_BAD[,BER_GOOD] (shared/channel.py)",
    )
    parser.add_argument("--codec", choices=CODEC_CHOICES, default="raw")
    parser.add_argument(
        "--chunks",
        type=int,
        default=1,
        help="independently decodable chunks of an entropy payload: 1..C' groups of channels, or a "
        "multiple of C' (bands of rows); default 1",
    )
    parser.add_argument(
        "--fec",
        type=int,
        default=0,
        metavar="PARITY",
        help="Reed–Solomon parity bytes per 255-byte block (even, 8..64; default 0: none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the channel's randomness")
    parser.add_argument(
        "--test-images", type=int, metavar="N", help="only the first N test images (default: all; MNIST has 10,000)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    result = evaluate(
        chosen_checkpoint(args), args.channel, args.codec, args.seed, args.chunks, args.fec, args.test_images
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['model']}, codec {args.codec}, channel {args.channel} (measured BER "
            f"{result['measured_ber']:.2e}): accuracy {result['accuracy']:.2f} % (clean {result['clean_accuracy']:.2f} "
            f"%), {result['erased_chunks']} of {result['chunks_sent']} chunks erased, "
            f"{result['mean_payload_bytes']:.1f} B per frame on the wire "
            f"({result['mean_coded_bytes']:.1f} B before FEC)"
        )
    return 0
