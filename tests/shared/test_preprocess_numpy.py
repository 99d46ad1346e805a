"""The numpy framing of handwriting against a reference written here with torch: the formulas the device used
before it framed uploads without torch (F.interpolate, max_pool2d, avg_pool2d, median, quantile).

The two implementations round differently (numpy adds a bilinear filter's taps one product at a time, torch's
compiled kernels fuse a multiply and an add), by one unit in the last place of a float32. That can only matter where
a resampled value is within that unit of the binarization threshold (half the darkest pixel, or 0.5): there one
pixel of the 80x80 (digits: 32x32) bitmap flips, and with it one 1/16 step of ink in one pixel of the frame (digits:
of one 8x8 cell, which the upscaling spreads). Measured: 3 of the first 2,000 MNIST test images differ in the mnist
style, 2 in the digits style, each by one bitmap pixel (all digits 20 px high, where the bilinear weights are exact
binary fractions and such near-ties happen); 0 of the 300 synthetic uploads in either style.
"""

from __future__ import annotations

import functools
import gzip
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from bench.drawn_digits import draw_strokes
from spikebottlenet.shared import preprocess
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.checkpoint_metadata import default_checkpoint
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import (
    BORDER_FRACTION,
    DIGIT_BITMAP,
    DIGIT_GRID,
    INK_PEAK_QUANTILE,
    INK_THRESHOLD,
    MAX_STROKE_FRACTION,
    MIN_INK_CONTRAST,
    MIN_STROKE_PX,
    MNIST_BOX,
    MNIST_FIELD,
    MNIST_MIN_STROKE_PX,
    MNIST_SUPERSAMPLE,
    WORKING_SIZE,
    load_image,
)
from spikebottlenet.training.datasets import mnist_file

SIZE = 32  # the shipped models' input
MNIST_IMAGES = 2000
MAX_DIFFERING_SHARE = 0.005  # of the frames: the few whose bitmap has a value at its threshold
# A frame pixel is a multiple of 1/16 of ink (a 4x4 block of the bitmap, or a bilinear mix of such for the digits),
# written as round(255 * ink): one bitmap pixel more or less moves it by at most ceil(255 / 16). A differing frame
# may have two bitmap pixels at a tie (with ATen's unvectorized DEFAULT kernels one digits-style frame of the 2,000
# differs by 25 at a pixel), so a pixel may move by two steps; a wrong framing moves whole strokes, by up to 255.
ONE_STEP = 16
MAX_STEPS = 2
# Synthetic uploads: every size from a single pixel to a large photo, square or not, both polarities.
UPLOAD_SIZES = [(1, 1), (2, 3), (5, 9), (13, 13), (28, 28), (41, 23), (64, 64), (97, 150), (256, 256), (333, 200)]
UPLOAD_SIZES += [(640, 480), (1000, 1000)]
UPLOADS_PER_SIZE = 25


# ---------------------------------------------------------------------------------------------
# the reference: the torch formulas, [N, H, W] float32 gray in 0..1 -> uint8 [N, 3, SIZE, SIZE]


def reference_frames(gray: torch.Tensor, input_style: str) -> torch.Tensor:
    if input_style == "digits":
        grid = torch.stack([reference_frame_digit(reference_ink(g)) for g in gray])[:, None]  # [N, 1, 8, 8]
        big = F.interpolate(grid, size=SIZE, mode="bilinear", align_corners=False)
        return (big.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    ink = [reference_ink(g) for g in gray]
    fields = [reference_frame_mnist(torch.zeros_like(i) if reference_shading(i) else i) for i in ink]
    pad = SIZE - MNIST_FIELD
    padded = F.pad(torch.stack(fields)[:, None], (pad // 2, pad - pad // 2) * 2)  # [N, 1, 32, 32]
    return (padded.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)


def reference_ink(gray: torch.Tensor) -> torch.Tensor:
    h, w = gray.shape
    band = max(1, round(BORDER_FRACTION * min(h, w)))
    border = torch.cat(
        [gray[:band].flatten(), gray[-band:].flatten(), gray[:, :band].flatten(), gray[:, -band:].flatten()]
    )
    background = border.median()  # the lower median
    if background > 0.5:
        gray, background = 1.0 - gray, 1.0 - background
    peak = torch.quantile(gray.flatten(), INK_PEAK_QUANTILE)
    if peak - background < MIN_INK_CONTRAST:
        return torch.zeros_like(gray)
    return ((gray - background) / (peak - background)).clamp(0.0, 1.0)


def reference_shading(ink: torch.Tensor) -> bool:
    """Whether the ink is shaded smoothly rather than drawn: 2 * mass / total variation over the shorter side."""
    variation = float((ink[1:] - ink[:-1]).abs().sum() + (ink[:, 1:] - ink[:, :-1]).abs().sum())
    width = 2 * float(ink.sum()) / variation if variation else float("inf")
    return width > MAX_STROKE_FRACTION * min(ink.shape)


def reference_bitmap(ink: torch.Tensor, size: int, min_stroke_px: float) -> torch.Tensor | None:
    rows = (ink > INK_THRESHOLD).any(dim=1).nonzero().flatten()
    cols = (ink > INK_THRESHOLD).any(dim=0).nonzero().flatten()
    if len(rows) == 0:
        return None
    box = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = box.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = F.pad(box, (left, side - w - left, top, side - h - top))
    coverage = F.interpolate(
        square[None, None], size=(size, size), mode="bilinear", align_corners=False, antialias=side > size
    )[0, 0]
    bitmap = coverage > min(INK_THRESHOLD, INK_THRESHOLD * float(coverage.max()))
    padded = F.pad(bitmap.float(), (1, 1, 1, 1))
    perimeter = float((padded[1:] != padded[:-1]).sum() + (padded[:, 1:] != padded[:, :-1]).sum())
    width = 2 * float(padded.sum()) / perimeter if perimeter else 0.0
    if width < min_stroke_px:
        grow = round((min_stroke_px - width) / 2)
        bitmap = F.max_pool2d(bitmap.float()[None, None], 2 * grow + 1, 1, grow)[0, 0] > 0
    return bitmap.float()


def reference_frame_digit(ink: torch.Tensor) -> torch.Tensor:
    bitmap = reference_bitmap(ink, DIGIT_BITMAP, MIN_STROKE_PX)
    if bitmap is None:
        return torch.zeros(DIGIT_GRID, DIGIT_GRID)
    return F.avg_pool2d(bitmap[None, None], DIGIT_BITMAP // DIGIT_GRID)[0, 0]


def reference_frame_mnist(ink: torch.Tensor) -> torch.Tensor:
    field = torch.zeros(MNIST_FIELD, MNIST_FIELD)
    bitmap = reference_bitmap(ink, MNIST_BOX * MNIST_SUPERSAMPLE, MNIST_MIN_STROKE_PX)
    if bitmap is None:
        return field
    digit = F.avg_pool2d(bitmap[None, None], MNIST_SUPERSAMPLE)[0, 0]
    mass, grid = digit.sum(), torch.arange(MNIST_BOX, dtype=torch.float32)
    row_com, col_com = float((digit.sum(1) * grid).sum() / mass), float((digit.sum(0) * grid).sum() / mass)
    room, centre = MNIST_FIELD - MNIST_BOX, (MNIST_FIELD - 1) / 2
    y0, x0 = (min(room, max(0, round(centre - com))) for com in (row_com, col_com))
    field[y0 : y0 + MNIST_BOX, x0 : x0 + MNIST_BOX] = digit
    return field


# ---------------------------------------------------------------------------------------------
# the images


@functools.cache
def mnist_gray() -> np.ndarray:
    """The first MNIST_IMAGES test digits as a PNG of them holds them, on the 0..1 scale: float32 [N, 28, 28]."""
    with gzip.open(io.BytesIO(mnist_file())) as f:
        _, _, (pixels, _) = pickle.load(f, encoding="latin1")  # mnist_file checked the file's SHA-256
    gray = np.rint(pixels[:MNIST_IMAGES] * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return gray.astype(np.float32) / 255


@functools.cache
def mnist_frames(input_style: str) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST digits framed in ``input_style`` by the module and by the reference: uint8 [N, 3, 32, 32] each."""
    gray = mnist_gray()
    return preprocess.frame_handwriting(gray, input_style, SIZE), reference_frames(torch.from_numpy(gray), input_style)


def synthetic_uploads() -> list[bytes]:
    """Pen-stroke digits (bench/drawn_digits.py) resampled to each of UPLOAD_SIZES, every other one inverted, as
    PNG files."""
    rng = np.random.default_rng(0)
    uploads = []
    for i in range(UPLOADS_PER_SIZE * len(UPLOAD_SIZES)):
        drawn = draw_strokes(i % 10, rng).resize(UPLOAD_SIZES[i % len(UPLOAD_SIZES)], Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        (ImageOps.invert(drawn) if i // len(UPLOAD_SIZES) % 2 else drawn).save(buffer, "PNG")
        uploads.append(buffer.getvalue())
    return uploads


def reference_upload(data: bytes, input_style: str) -> np.ndarray:
    """An upload framed by the reference, after the Pillow steps load_image takes: uint8 [3, 32, 32]."""
    img = preprocess.decode_image(data, WORKING_SIZE)
    img.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
    gray = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255)
    return reference_frames(gray[None], input_style)[0].numpy()


def differing_frames(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """bool [N]: the frames [N, 3, H, W] that are not the reference's; asserts each of their pixels is within
    MAX_STEPS steps of ink of it."""
    assert frames.shape == reference.shape and frames.dtype == reference.dtype == np.uint8
    assert np.abs(frames.astype(np.int16) - reference.astype(np.int16)).max() <= MAX_STEPS * ONE_STEP
    return (frames != reference).reshape(len(frames), -1).any(axis=1)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_style", ["mnist", "digits"])
def test_mnist_digits_are_framed_as_the_torch_reference_frames_them(input_style: str) -> None:
    frames, reference = mnist_frames(input_style)
    assert differing_frames(frames, reference.numpy()).sum() <= MAX_DIFFERING_SHARE * MNIST_IMAGES


@pytest.mark.parametrize("input_style", ["mnist", "digits"])
def test_uploads_of_any_size_and_polarity_are_framed_as_the_torch_reference_frames_them(input_style: str) -> None:
    config = ModelConfig(mean=(0.0,) * 3, std=(1.0,) * 3, input_style=input_style)  # load_image's pixels as they are
    uploads = synthetic_uploads()
    frames = np.stack([np.rint(load_image(data, config) * 255).astype(np.uint8) for data in uploads])
    reference = np.stack([reference_upload(data, input_style) for data in uploads])
    # a digit of 13 px or more a side survives resizing: the comparison is over inked frames
    inked = reference.reshape(len(uploads), -1).any(axis=1)
    assert all(inked[i] for i in range(len(uploads)) if min(UPLOAD_SIZES[i % len(UPLOAD_SIZES)]) >= 13)
    assert differing_frames(frames, reference).sum() <= MAX_DIFFERING_SHARE * len(uploads)


def test_the_default_model_gives_the_same_labels_on_the_numpy_frames() -> None:
    # The model is deterministic and a batch's images do not interact (tests/shared/test_batch_invariance.py), so
    # where a frame is the reference's its label is too: only the differing frames need a forward. (All 2,000 run
    # through it both ways once gave the same labels.)
    loaded = load_checkpoint(default_checkpoint("spiking_resnet50", 8))
    assert loaded.config.input_style == "mnist"
    frames, reference = mnist_frames("mnist")
    differing = torch.from_numpy(differing_frames(frames, reference.numpy()))
    if not differing.any():  # every frame is the reference's (as with ATen's DEFAULT kernels): so is every label
        return
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (loaded.config.mean, loaded.config.std))
    loaded.model.eval()
    with torch.no_grad():
        labels, reference_labels = (
            loaded.model((images[differing].float() / 255 - mean) / std).argmax(-1)
            for images in (torch.from_numpy(frames), reference)
        )
    assert torch.equal(labels, reference_labels)


def test_preprocessing_and_the_uncertainty_rules_run_without_torch(tmp_path: Path) -> None:
    gray = np.zeros((60, 40), np.uint8)
    gray[10:50, 18:23] = 255  # a "1"
    Image.fromarray(gray).save(tmp_path / "one.png")
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
from pathlib import Path
import numpy as np
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import load_image
from spikebottlenet.shared.uncertainty import InputTraits, max_softmax
config = ModelConfig(mean=(0.1,) * 3, std=(0.3,) * 3, input_style="mnist")
x = load_image(Path({str(tmp_path / "one.png")!r}).read_bytes(), config)
assert x.shape == (3, 32, 32) and x.dtype == np.float32, (x.shape, x.dtype)
(traits,) = InputTraits.of(x[None], config)
assert not traits.blank and traits.stroke_depth > 0 and 0 < traits.ink < 0.5, traits
assert max_softmax(np.log(np.array([[1.0, 3.0]]))).tolist() == [np.float32(0.75)]
assert "torch" not in {{name.split(".")[0] for name, module in sys.modules.items() if module is not None}}
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
