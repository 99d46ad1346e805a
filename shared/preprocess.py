"""Image bytes -> the normalized tensor a model expects (used by ``sbn report`` and the device service).

How an upload is brought to what the model was trained on is a property of the model, its
config's ``input_style``:

    natural  (CIFAR-style photos)
        bytes -> Pillow (a few common formats only) -> RGB 8-bit -> resize to image_size x image_size
              -> [3, H, W] float32 in 0..1 -> (x - mean) / std per channel

    digits   (the scikit-learn digits: UCI optdigits, white ink on black, 8x8 of 0..16)
        bytes -> Pillow -> grayscale, at most WORKING_SIZE px a side
              -> ink_image: background = median of the border; dark ink on a light background is
                 inverted; contrast stretched so background = 0 and the ink's 99.9th percentile = 1
              -> frame_digit, the way optdigits made its images: crop to the ink's bounding box
                 (ink > 0.5), pad the short side to a square (the digit touches the long side, as
                 in the training data: 8 of 8 rows inked, 5.4 of 8 columns on average), resize to
                 a 32x32 bitmap (area average), binarize at 0.5 (lower for strokes thinner than a
                 bitmap pixel), widen strokes thinner than the scans' pen (MIN_STROKE_PX), count
                 ink in 4x4 blocks -> 8x8 of 0..16
              -> upscale_digits, exactly as the training images were made: bilinear to 32x32,
                 the same gray on R, G and B -> (x - mean) / std

An image with no ink at all (flat, or contrast below MIN_INK_CONTRAST) becomes a black frame; the
classifier's uncertainty check (device/classification.py) then flags it.

Everything that can go wrong with untrusted input (empty, truncated, not an image, a format we do
not open, a decompression bomb, a colour mode with no RGB conversion) raises ``ImageError``.
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

if TYPE_CHECKING:
    from .split_model import ModelConfig

INPUT_STYLES = ("natural", "digits")

# Pillow's plugins include formats that run external programs (EPS calls Ghostscript) or are rarely
# fuzzed; uploads only need the common ones.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
# Decoded size limit: a few bytes of PNG or GIF can declare gigapixels. 50 MP admits any camera photo.
MAX_PIXELS = 50_000_000
# Transparent pixels are shown over white, as an image viewer would.
BACKGROUND = (255, 255, 255)
# Integer grayscale modes of more than 8 bits; Pillow's convert("RGB") clips them at 255 instead of scaling.
HIGH_DEPTH_GRAY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# What Pillow raises on malformed data, depending on the format plugin.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


class ImageError(ValueError):
    """Data that cannot be turned into a model input; the message says why."""


def load_image(data: bytes, config: ModelConfig) -> torch.Tensor:
    """Decode one image and prepare it in the model's input style: bytes -> normalized [3, H, W] float32."""
    size = config.backbone.image_size
    if config.input_style == "digits":
        img = decode_image(data, WORKING_SIZE)
        img.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)  # area average: thin strokes stay gray
        gray = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)  # [H, W]
        grid = frame_digit(ink_image(gray))  # [8, 8]
        pixels = upscale_digits(grid[None, None], size)[0].float() / 255.0  # [3, size, size]
    else:
        img = decode_image(data, size)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, H, W]
    mean = torch.tensor(config.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


def unnormalize(x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Normalized model inputs [N, 3, H, W] -> their pixels on the 0..1 scale (load_image's last step undone)."""
    mean = torch.tensor(config.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(config.std, dtype=x.dtype).view(1, 3, 1, 1)
    return x * std + mean


def decode_image(data: bytes, draft_size: int) -> Image.Image:
    """Untrusted bytes -> an 8-bit RGB Pillow image; JPEGs decoded at no less than ``draft_size``."""
    if not data:
        raise ImageError("empty image data")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        if img.width * img.height > MAX_PIXELS:  # checked on the header, before decoding anything
            raise ImageError(f"image is {img.width}x{img.height} pixels; at most {MAX_PIXELS:,} are accepted")
        img.draft("RGB", (draft_size, draft_size))  # JPEG only: let the decoder downscale by up to 8x, cheaply
        img.load()
        img = _to_rgb(ImageOps.exif_transpose(img))  # camera photos: apply the orientation tag
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except DECODE_ERRORS as e:
        raise ImageError(f"cannot decode the image: {e}") from None
    return img


# ---------------------------------------------------------------------------------------------
# digits: the optdigits recipe (Alpaydin & Kaynak, UCI): 32x32 bitmaps counted in 4x4 blocks

WORKING_SIZE = 256  # px: larger uploads are area-averaged down first (bounded work per image)
DIGIT_GRID = 8  # the training images are 8x8 ...
DIGIT_BITMAP = 32  # ... block counts of a 32x32 binary bitmap
INK_THRESHOLD = 0.5  # on the contrast-stretched 0..1 scale
INK_PEAK_QUANTILE = 0.999  # the ink's level: robust to a few hot pixels, yet a thin line is more than 0.1 %
MIN_STROKE_PX = 4.3  # in the 32 px bitmap: the training scans' 25th percentile (median 4.9, 5th 3.5)
MIN_INK_CONTRAST = 0.15  # ink level minus background below this: no ink at all
BORDER_FRACTION = 0.05  # the border band whose median is the background


def ink_image(gray: torch.Tensor) -> torch.Tensor:
    """Grayscale [H, W] in 0..1 -> ink [H, W] in 0..1: background 0, ink 1, whichever the polarity.

    All zeros when there is no ink: a flat image, or one whose brightest (darkest) 0.1 % is within
    MIN_INK_CONTRAST of the background.
    """
    h, w = gray.shape
    band = max(1, round(BORDER_FRACTION * min(h, w)))
    border = torch.cat([gray[:band].flatten(), gray[-band:].flatten(), gray[:, :band].flatten(),
                        gray[:, -band:].flatten()])
    background = border.median()
    if background > 0.5:  # dark ink on a light background (paper, a drawing app): invert
        gray, background = 1.0 - gray, 1.0 - background
    peak = torch.quantile(gray.flatten(), INK_PEAK_QUANTILE)
    if peak - background < MIN_INK_CONTRAST:
        return torch.zeros_like(gray)
    return ((gray - background) / (peak - background)).clamp(0.0, 1.0)


def frame_digit(ink: torch.Tensor) -> torch.Tensor:
    """Ink [H, W] in 0..1 -> the 8x8 training frame, ink in 0..1 in steps of 1/16.

    Crop to the bounding box of ink > INK_THRESHOLD, centre it in a square whose side is the box's
    longer side, resize that to a 32x32 bitmap, binarize, widen thin strokes, and count each 4x4
    block. An image with no ink gives an all-zero frame.
    """
    rows = (ink > INK_THRESHOLD).any(dim=1).nonzero().flatten()
    cols = (ink > INK_THRESHOLD).any(dim=0).nonzero().flatten()
    if len(rows) == 0:
        return torch.zeros(DIGIT_GRID, DIGIT_GRID)
    box = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # [h, w]
    h, w = box.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = F.pad(box, (left, side - w - left, top, side - h - top))  # [side, side]
    # area-averaged ink per bitmap pixel; a pen stroke thinner than a bitmap pixel (a 2 px line on a
    # 200 px digit) averages below 0.5 everywhere, so the threshold follows the darkest pixel down
    coverage = F.interpolate(square[None, None], size=(DIGIT_BITMAP, DIGIT_BITMAP), mode="bilinear",
                             align_corners=False, antialias=side > DIGIT_BITMAP)[0, 0]
    bitmap = coverage > min(INK_THRESHOLD, INK_THRESHOLD * float(coverage.max()))
    # the scans were written with a broad pen (strokes 4.9 px wide in the 32 px bitmap, median); a
    # ballpoint line, a canvas brush or a typeface is often 2-3 px there: widen thinner strokes
    width = stroke_width(bitmap)
    if width < MIN_STROKE_PX:
        grow = round((MIN_STROKE_PX - width) / 2)  # pixels added on each side of a stroke
        bitmap = F.max_pool2d(bitmap.float()[None, None], 2 * grow + 1, 1, grow)[0, 0] > 0
    block = DIGIT_BITMAP // DIGIT_GRID
    return F.avg_pool2d(bitmap.float()[None, None], block)[0, 0]  # [8, 8], multiples of 1/16


def stroke_width(bitmap: torch.Tensor) -> float:
    """Mean stroke width in pixels of a binary image [H, W]: 2 * area / perimeter.

    A stroke of length L and width w has area L*w and perimeter 2L + 2w (pixel edges between ink and
    background), so the ratio is w * L / (L + w): the width, for strokes much longer than wide.
    """
    ink = F.pad(bitmap.float(), (1, 1, 1, 1))  # background all around
    perimeter = float((ink[1:] != ink[:-1]).sum() + (ink[:, 1:] != ink[:, :-1]).sum())
    return 2 * float(ink.sum()) / perimeter if perimeter else 0.0


def upscale_digits(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Frames [N, 1, 8, 8] of ink in 0..1 -> uint8 RGB [N, 3, size, size]: how every training image was made.

    Bilinear upscaling keeps strokes smooth; the same image on all three channels makes it RGB.
    """
    big = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
    return (big.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16-bit gray scaled down, transparency flattened onto BACKGROUND."""
    if img.mode in HIGH_DEPTH_GRAY:
        gray = np.asarray(img, dtype=np.float64) / 65535.0  # [H, W], full 16-bit range -> 0..1
        img = Image.fromarray(np.round(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    try:
        return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...
    except ValueError as e:
        raise ImageError(f"cannot convert colour mode {img.mode} to RGB: {e}") from None
