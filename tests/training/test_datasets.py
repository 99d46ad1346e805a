"""Datasets: CIFAR-100 in its official pickle layout, the digits split, batch augmentation."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import load_image
from spikebottlenet.training.datasets import (
    Augmentation,
    DatasetError,
    channel_stats,
    load_cifar100,
    load_dataset,
    load_digits,
)
from spikebottlenet.training.digit_augment import typeface_files

NUM_CLASSES = 100


def write_cifar(folder: Path, n_train: int = 12, n_test: int = 6, seed: int = 0) -> Path:
    """A tiny directory in the real "python version" format: the keys and dtypes of the official files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{name} batch".encode(),
            b"fine_labels": rng.integers(0, NUM_CLASSES, n).tolist(),
            b"coarse_labels": rng.integers(0, 20, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {
        b"fine_label_names": [f"class_{i}".encode() for i in range(NUM_CLASSES)],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return folder


def test_cifar100_loads_images_labels_and_names(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar-100-python")
    data = load_cifar100(folder)
    raw = pickle.loads((folder / "train").read_bytes())
    assert data.train.images.shape == (12, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (6, 3, 32, 32)
    assert data.train.labels.tolist() == raw[b"fine_labels"]
    # row-major R plane, then G, then B: pixel (row 1, col 2) of the green plane of image 3
    assert data.train.images[3, 1, 1, 2] == raw[b"data"][3, 1024 + 32 + 2]
    assert data.labels[:2] == ("class_0", "class_1") and len(data.labels) == NUM_CLASSES
    assert data.augmentation == Augmentation(padding=4, hflip=True)


def test_cifar100_accepts_the_parent_of_the_extracted_folder(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-100-python")
    assert len(load_dataset("cifar100", tmp_path).train) == 12


def test_cifar100_normalization_comes_from_the_training_split(tmp_path: Path) -> None:
    data = load_cifar100(write_cifar(tmp_path / "c"))
    x = data.train.images.double() / 255
    assert data.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert data.std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-4)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_cifar100(tmp_path / "nowhere")


def test_wrong_layout_names_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "train").write_bytes(b"")
    with pytest.raises(DatasetError, match="missing test, meta"):
        load_cifar100(tmp_path)


def test_pickle_without_the_cifar_keys_is_refused(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "c")
    (folder / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DatasetError, match="fine_labels"):
        load_cifar100(folder)


def test_cifar100_needs_a_data_dir() -> None:
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("cifar100")


def test_digits_split_is_fixed_stratified_and_normalized_from_train() -> None:
    data = load_digits()
    assert (len(data.train), len(data.test)) == (1437, 360)
    assert data.train.images.shape[1:] == (3, 32, 32)
    assert data.labels == tuple("0123456789")
    per_class = torch.bincount(data.train.labels) + torch.bincount(data.test.labels)
    assert (torch.bincount(data.test.labels) - 0.2 * per_class).abs().max() <= 1  # stratified 80/20
    assert (data.mean, data.std) == channel_stats(data.train.images)
    assert torch.equal(load_digits().test.images, data.test.images)  # the same split every time
    assert not data.augmentation.hflip


def test_augmentation_crops_and_flips_per_image() -> None:
    data = load_digits("natural").take(8, 0)
    images, labels = data.train.images, data.train.labels
    generator = torch.Generator().manual_seed(0)
    out = data.augment(images, labels, generator)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)  # 8 images all landing on the zero offset is (1/81)^8
    assert torch.equal(out, data.augment(images, labels, torch.Generator().manual_seed(0)))  # seeded

    flip_only = dataclasses.replace(data, augmentation=Augmentation(padding=0, hflip=True))
    flipped = flip_only.augment(images, labels, generator)
    for original, result in zip(images, flipped, strict=True):
        assert torch.equal(result, original) or torch.equal(result, original.flip(-1))


def test_normalize_standardizes_per_channel() -> None:
    data = load_digits()
    x = data.normalize(data.train.images)
    assert x.mean().item() == pytest.approx(0, abs=1e-3) and x.std().item() == pytest.approx(1, abs=1e-2)


def png(image: torch.Tensor) -> bytes:
    """uint8 [3, H, W] -> PNG file bytes, as a user would upload the picture."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "PNG")
    return buffer.getvalue()


def test_digits_test_images_are_what_the_device_makes_of_an_upload_of_them() -> None:
    # train/serve consistency through a different path: the scan as an uploaded PNG file, through
    # the device's preprocessing (Pillow decode, grayscale, polarity, crop, frame) ...
    natural, framed = load_digits("natural"), load_digits("digits")
    config = ModelConfig(mean=framed.mean, std=framed.std, input_style="digits")
    for i in range(0, 360, 36):
        x = torch.from_numpy(load_image(png(natural.test.images[i]), config))  # normalized [3, 32, 32]
        pixels = (x * torch.tensor(config.std).view(3, 1, 1) + torch.tensor(config.mean).view(3, 1, 1)) * 255
        # ... equals the training pipeline's image of it (up to uint8 rounding)
        assert (pixels - framed.test.images[i].float()).abs().max() <= 1.0


def test_redrawn_digits_are_seeded_changed_and_framed_again() -> None:
    data = load_digits("digits").take(16, 0)
    assert 0 < data.augmentation.redraw_digits < 1 and data.augmentation.padding == 0
    data = dataclasses.replace(data, augmentation=dataclasses.replace(data.augmentation, redraw_digits=1.0))
    images, labels = data.train.images, data.train.labels
    out = data.augment(images, labels, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, data.augment(images, labels, torch.Generator().manual_seed(1)))
    assert all(not torch.equal(a, b) for a, b in zip(out, images, strict=True))
    # re-framed like an upload: the ink's box spans the whole frame along its longer side
    for image in out[:, 0].float() / 255:
        ink = image > 0.1
        rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
        extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        assert extent >= 30  # of 32: the bilinear upscale of a frame whose long side is 8 of 8 blocks


def test_digits_come_in_the_two_input_styles_only() -> None:
    with pytest.raises(DatasetError, match="input style"):
        load_digits("photos")
    with pytest.raises(DatasetError, match="natural input style only"):
        load_dataset("cifar100", "somewhere", input_style="digits")


def test_typed_digits_are_their_own_labels_in_training_typefaces_framed_as_uploads() -> None:
    data = load_digits("digits").take(40, 0)
    data = dataclasses.replace(data, augmentation=dataclasses.replace(data.augmentation, typed_digits=1.0))
    images, labels = data.train.images, data.train.labels
    out = data.augment(images, labels, torch.Generator().manual_seed(2))
    assert torch.equal(out, data.augment(images, labels, torch.Generator().manual_seed(2)))  # seeded
    assert all(not torch.equal(a, b) for a, b in zip(out, images, strict=True))  # every one replaced
    # typed in matplotlib's Computer Modern and STIX faces, never in the held-out set's DejaVu / Liberation
    assert not any("DejaVu" in path.name or "Liberation" in path.name for path in typeface_files())
    # a typed 1 is a single stroke, a typed 8 two loops: across typefaces, far less ink in the 1s
    ones = torch.tensor([d == 1 for d in labels.tolist()])
    eights = torch.tensor([d == 8 for d in labels.tolist()])
    ink = out[:, 0].float().mean(dim=(1, 2))
    assert ones.any() and eights.any() and ink[ones].mean() < 0.8 * ink[eights].mean()
