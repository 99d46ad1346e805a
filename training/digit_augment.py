"""Augmentation for the digits models: how people draw, then the device's own preprocessing.

The scikit-learn digits are tidy scans: upright, fill-the-frame, one stroke width, white on black.
Uploads are not. Each training batch is therefore re-drawn before it is framed again exactly as an
upload would be (shared/preprocess.py's frame_handwriting, in the dataset's input style):

    uint8 [B, 3, 32, 32] training images -> ink [B, 1, 64, 64] (bilinear, finer grid for the warps)
      -> random affine: rotation +-15 deg, scale 0.7..1.05 per axis, shear +-0.2, shift +-10 %
      -> stroke width: dilate (3x3 or 5x5 max) or erode (3x3 min) or keep, one third each
      -> blur: Gaussian, sigma 0..1.5 px, half the images
      -> contrast and polarity: ink level 0.35..1 over a background 0..0.3, noise, inverted half the time
      -> frame_handwriting (ink_image, then frame_digit or frame_mnist)        -> uint8 [B, 3, 32, 32]

A share of each batch can instead be typed: the image's own digit rendered in one of the typefaces
matplotlib ships besides DejaVu (Computer Modern roman, sans, typewriter, bold and italic; STIX
regular, bold, italic, bold italic), then taken through the same warp, pen, blur, contrast and
framing. The held-out set that measures uploads (bench/drawn_digits.py) types its digits in DejaVu and
Liberation fonts, which no training image is ever drawn in.

Everything draws from the caller's generator, so a seeded run repeats.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.preprocess import frame_handwriting

WORK_SIZE = 64
MAX_ROTATION_DEG = 15.0
SCALE = (0.7, 1.05)
MAX_SHEAR = 0.2
MAX_SHIFT = 0.1  # of the frame
MAX_BLUR_SIGMA = 1.5


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _warp(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, per-axis scale, shear and shift of ink [B, 1, S, S] (zeros flow in)."""
    b = ink.shape[0]
    angle = _uniform(b, -MAX_ROTATION_DEG, MAX_ROTATION_DEG, generator) * math.pi / 180
    sx, sy = _uniform(b, *SCALE, generator), _uniform(b, *SCALE, generator)
    shear = _uniform(b, -MAX_SHEAR, MAX_SHEAR, generator)
    cos, sin = angle.cos(), angle.sin()
    # output -> input sampling matrix: the inverse of (rotate . shear . scale)
    forward = torch.stack(
        [torch.stack([cos * sx, (cos * shear - sin) * sy], -1), torch.stack([sin * sx, (sin * shear + cos) * sy], -1)],
        1,
    )  # [B, 2, 2]
    inverse = torch.linalg.inv(forward)
    shift = torch.stack([_uniform(b, -2 * MAX_SHIFT, 2 * MAX_SHIFT, generator) for _ in range(2)], -1)
    theta = torch.cat([inverse, shift[:, :, None]], 2)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(ink.shape), align_corners=False)
    return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _stroke_width(ink: torch.Tensor, generator: torch.Generator, thin: bool = True) -> torch.Tensor:
    """Dilate, dilate more, erode or keep each image's strokes; ``thin`` False: never erode (a typeface's
    hairlines would break up)."""
    choice = torch.randint(0, 4, (ink.shape[0],), generator=generator)[:, None, None, None]
    if not thin:
        choice = torch.where(choice == 2, 3, choice)
    thick = F.max_pool2d(ink, 3, 1, 1)
    thicker = F.max_pool2d(ink, 5, 1, 2)
    thinner = -F.max_pool2d(-ink, 3, 1, 1)
    return torch.where(choice == 0, thick, torch.where(choice == 1, thicker, torch.where(choice == 2, thinner, ink)))


def _blur(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    b = ink.shape[0]
    sigma = _uniform(b, 0.05, MAX_BLUR_SIGMA, generator) * (torch.rand(b, generator=generator) < 0.5)
    offsets = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))  # [B, 7]
    kernel = kernel / kernel.sum(1, keepdim=True)
    # separable, one kernel per image: the batch as channels of a grouped conv
    x = ink.transpose(0, 1)  # [1, B, S, S]
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), kernel[:, None, :, None], groups=b)
    return x.transpose(0, 1)


def _contrast_and_polarity(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    b = ink.shape[0]
    level = _uniform(b, 0.35, 1.0, generator)[:, None, None, None]
    background = _uniform(b, 0.0, 0.3, generator)[:, None, None, None]
    gray = background + (level * (1 - background)) * ink
    gray = gray + 0.03 * torch.randn(gray.shape, generator=generator)
    invert = (torch.rand(b, generator=generator) < 0.5)[:, None, None, None]
    return torch.where(invert, 1 - gray, gray).clamp(0, 1)


def augment_digits(images: torch.Tensor, input_style: str, generator: torch.Generator) -> torch.Tensor:
    """uint8 [B, 3, 32, 32] digits -> re-drawn, re-framed in ``input_style``, uint8 [B, 3, 32, 32] (CPU generator)."""
    ink = images[:, :1].float().cpu() / 255  # [B, 1, 32, 32]: the three channels are equal
    ink = F.interpolate(ink, size=WORK_SIZE, mode="bilinear", align_corners=False)
    return _redraw(ink, input_style, images.shape[-1], generator).to(images.device)


def typed_digits(labels: torch.Tensor, input_style: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """Digits [B] -> each typed in a training typeface, re-drawn and framed in ``input_style``:
    uint8 [B, 3, size, size]."""
    fonts = typeface_files()
    font_index = torch.randint(0, len(fonts), (len(labels),), generator=generator).tolist()
    point_size = torch.randint(40, 61, (len(labels),), generator=generator).tolist()  # digits 28-43 px high
    ink = torch.stack(
        [_type(str(int(d)), fonts[f], p) for d, f, p in zip(labels.tolist(), font_index, point_size, strict=True)]
    )
    return _redraw(ink[:, None], input_style, size, generator, thin=False)


def _redraw(
    ink: torch.Tensor, input_style: str, size: int, generator: torch.Generator, thin: bool = True
) -> torch.Tensor:
    """Ink [B, 1, WORK_SIZE, WORK_SIZE] -> warped, pen, blur, contrast and polarity, framed:
    uint8 [B, 3, size, size]."""
    pen = _stroke_width(_warp(ink, generator), generator, thin)
    gray = _contrast_and_polarity(_blur(pen, generator), generator)
    return torch.from_numpy(frame_handwriting(gray[:, 0].numpy(), input_style, size))


# matplotlib's bundled typefaces other than DejaVu (the held-out set's), whose digits are lining figures
TRAINING_TYPEFACES = (
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)


@functools.cache
def typeface_files() -> tuple[Path, ...]:
    try:
        import matplotlib
    except ImportError:
        raise SpikeBottleNetError(
            "typed training digits need matplotlib's fonts: pip install 'spikebottlenet[train]'"
        ) from None
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [name for name in TRAINING_TYPEFACES if not (folder / name).is_file()]
    if missing:
        raise SpikeBottleNetError(f"matplotlib at {folder} lacks the typefaces {', '.join(missing)}")
    return tuple(folder / name for name in TRAINING_TYPEFACES)


@functools.cache
def _font(path: Path, point_size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), point_size)


def _type(digit: str, font_path: Path, point_size: int) -> torch.Tensor:
    """One digit in white on black, centred on a WORK_SIZE square: ink [WORK_SIZE, WORK_SIZE] in 0..1."""
    font = _font(font_path, point_size)
    left, top, right, bottom = font.getbbox(digit)
    canvas = Image.new("L", (WORK_SIZE, WORK_SIZE), 0)
    ImageDraw.Draw(canvas).text(
        ((WORK_SIZE - (right - left)) / 2 - left, (WORK_SIZE - (bottom - top)) / 2 - top), digit, font=font, fill=255
    )
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255)
