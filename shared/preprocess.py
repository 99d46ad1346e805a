"""Image bytes -> the normalized tensor a model expects (used by ``sbn report`` and the device service).

    bytes -> Pillow (a few common formats only) -> RGB 8-bit -> resize to image_size x image_size
          -> [3, H, W] float32 in 0..1 -> (x - mean) / std per channel

Everything that can go wrong with untrusted input (empty, truncated, not an image, a format we do
not open, a decompression bomb, a colour mode with no RGB conversion) raises ``ImageError``.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import torch
from PIL import Image, ImageOps

from .split_model import ModelConfig

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
    """Decode, convert to RGB, resize and normalize one image: bytes -> [3, H, W] float32."""
    if not data:
        raise ImageError("empty image data")
    size = config.backbone.image_size
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        if img.width * img.height > MAX_PIXELS:  # checked on the header, before decoding anything
            raise ImageError(f"image is {img.width}x{img.height} pixels; at most {MAX_PIXELS:,} are accepted")
        img.draft("RGB", (size, size))  # JPEG only: let the decoder downscale by up to 8x, cheaply
        img.load()
        img = _to_rgb(ImageOps.exif_transpose(img))  # camera photos: apply the orientation tag
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except DECODE_ERRORS as e:
        raise ImageError(f"cannot decode the image: {e}") from None
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, H, W]
    mean = torch.tensor(config.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


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
