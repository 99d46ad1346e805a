"""``sbn train fit-codec``: fit a split checkpoint's entropy-codec model on its training data.

    spikes of the training split (the head's transmitted tensor) -> counts per channel and context
    -> the context model (shared/entropy_codec.py) -> written into the checkpoint's config

The config changes, so the checkpoint gets a new fingerprint: head and tail must both load the new
file. The test split then measures what the codec buys, recorded in the info (``entropy_codec``):
the mean entropy payload per image, the raw payload, and the bound a first-order coder approaches,
the empirical H(s_t | s_t−1, channel) of the test spikes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikebottlenet.shared.checkpoint import load_checkpoint, save_checkpoint
from spikebottlenet.shared.checkpoint_metadata import CheckpointError, EntropyCodecFigures
from spikebottlenet.shared.codec import Codec, encode
from spikebottlenet.shared.entropy_codec import (
    SpikeContextModel,
    conditional_entropy_bits,
    own_step_counts,
    transition_counts,
)
from spikebottlenet.shared.split_model import SpikeBottleNet

from .datasets import Dataset
from .runtime import Runtime

BATCH = 256


def transmitted_spikes(head: nn.Module, images: torch.Tensor, data: Dataset, runtime: Runtime) -> np.ndarray:
    """The head's spikes [T, N, C', H', W'] (uint8) for uint8 images [N, 3, H, W]."""
    head.eval().to(runtime.device)
    with torch.inference_mode():
        return np.concatenate(
            [
                head(data.normalize(batch.to(runtime.device))).cpu().numpy().astype(np.uint8)
                for batch in images.split(BATCH)
            ],
            axis=1,
        )


def fit_codec(path: Path, data: Dataset, runtime: Runtime, out: Path) -> EntropyCodecFigures:
    """Fit the entropy model of the split checkpoint ``path`` on ``data``'s training split and write the checkpoint
    with it to ``out`` (may be ``path``); returns the test-split figures also recorded in its info."""
    loaded = load_checkpoint(path)
    if not isinstance(loaded.model, SpikeBottleNet):
        raise CheckpointError(f"{path} is a backbone checkpoint: it transmits nothing to code")
    if not loaded.checkpoint.info_verified:  # rewriting it would vouch for info nobody checked
        raise CheckpointError(
            f"{path}: its info does not match its digest (edited, or an older file); not rewriting it"
        )
    if loaded.config.input_style != data.input_style:
        raise CheckpointError(f"{path} takes {loaded.config.input_style!r} input, the data is {data.input_style!r}")
    head = loaded.model.head
    model = SpikeContextModel.fit(transition_counts(transmitted_spikes(head, data.train.images, data, runtime)))
    test = transmitted_spikes(head, data.test.images, data, runtime)  # [T, N, C', H', W']
    images = test.shape[1]
    payloads = [len(encode(test[:, i : i + 1], Codec.ENTROPY, model=model)[1]) for i in range(images)]
    figures = EntropyCodecFigures(
        fitted_on=f"{data.name} training split, {len(data.train)} images",
        test_images=images,
        raw_bytes=len(encode(test[:, :1], Codec.RAW)[1]),
        entropy_mean_bytes=round(float(np.mean(payloads)), 2),
        first_order_bound_bytes=round(conditional_entropy_bits(own_step_counts(test)) / images / 8, 2),
    )
    config = dataclasses.replace(loaded.config, entropy_model=model.to_config())
    save_checkpoint(loaded.model, config, out, dataclasses.replace(loaded.checkpoint.info, entropy_codec=figures))
    return figures
