"""Image bytes -> the normalized array a model expects (used by ``sbn report`` and the device service).

numpy and Pillow only, no torch: a device runtime without torch (onnxruntime) prepares uploads with it, and
training frames its images with it too (``torch.from_numpy`` at its boundary).

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

    mnist    (handwriting at MNIST's resolution: the shipped models)
        bytes -> Pillow -> grayscale, at most WORKING_SIZE px a side -> drawn_ink: ink_image, as for
                 digits, and no ink for smooth shading
              -> frame_mnist, the way MNIST made its images: crop to the ink's bounding box, pad to
                 a square, draw it as an 80x80 bitmap (strokes thinner than MNIST's widened),
                 area-average to 20x20, place it by its centre of mass in a 28x28 field
              -> pad_mnist: zero border to 32x32, the same gray on R, G and B -> (x - mean) / std

For the handwriting styles, training images take the same path as uploads (frame_handwriting).
An image with no ink at all (flat, contrast below MIN_INK_CONTRAST, or, for mnist, smooth shading
with no strokes, such as a colour gradient: drawn_ink) becomes a black frame; the
classifier's uncertainty check (device/classification.py) then flags it.

Everything that can go wrong with untrusted input (empty, truncated, not an image, a format we do
not open, a colour mode with no RGB conversion) raises ``ImageError``; an image whose decoded size
would exceed the budget (``decoded_bytes``: a decompression bomb, or just far more pixels than any
model needs) raises its subclass ``ImageTooLarge``, judged from the header before anything is decoded.
"""

from __future__ import annotations

import functools
import io
import struct
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageMode, ImageOps

from .errors import SpikeBottleNetError

if TYPE_CHECKING:
    from .model_config import ModelConfig

INPUT_STYLES = ("natural", "digits", "mnist")

# Pillow's plugins include formats that run external programs (EPS calls Ghostscript) or are rarely
# fuzzed; uploads only need the common ones.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
# The default decoded-size budget (decoded_bytes): a 4096 x 4096 image at 4 bytes a pixel (8-bit RGBA). Models take
# 32 x 32 inputs, so this is a wide margin over anything one needs, while a few kilobytes of PNG can declare
# gigapixels (whose decode would take seconds and gigabytes).
MAX_DECODED_BYTES = 4096 * 4096 * 4
# Every image is converted to 8-bit RGB at full size before it is scaled to the model's input (_to_rgb), so no mode
# costs less than this per pixel, however few bits it stores.
RGB_BYTES_PER_PIXEL = 3
# Transparent pixels are shown over white, as an image viewer would.
BACKGROUND = (255, 255, 255)
# Integer grayscale modes of more than 8 bits; Pillow's convert("RGB") clips them at 255 instead of scaling.
HIGH_DEPTH_GRAY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# What Pillow raises on malformed data, depending on the format plugin.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class ImageError(SpikeBottleNetError, ValueError):
    """Data that cannot be turned into a model input; the message says why."""


class ImageTooLarge(ImageError):
    """An image whose decoded size is over the budget; the message names the budget."""


def load_image(data: bytes, config: ModelConfig, max_decoded_bytes: int = MAX_DECODED_BYTES) -> np.ndarray:
    """Decode one image and prepare it in the model's input style: bytes -> normalized float32 [3, H, W].

    Raises ImageTooLarge for an image whose ``decoded_bytes`` are over ``max_decoded_bytes``, ImageError for
    anything else that cannot be read."""
    size = config.backbone.image_size
    if config.input_style in ("digits", "mnist"):
        img = decode_image(data, WORKING_SIZE, max_decoded_bytes)
        img.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)  # area average: thin strokes stay gray
        gray = np.asarray(img.convert("L"), dtype=np.float32) / 255  # [H, W]
        pixels = frame_handwriting(gray[None], config.input_style, size)[0].astype(np.float32) / 255  # [3, size, size]
    else:
        img = decode_image(data, size, max_decoded_bytes)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1), dtype=np.float32) / 255  # [3, H, W]
    return (pixels - _channels(config.mean)) / _channels(config.std)


def frame_handwriting(gray: np.ndarray, input_style: str, size: int) -> np.ndarray:
    """Grayscale images float32 [N, H, W] in 0..1 -> uint8 RGB [N, 3, size, size] framed in ``input_style``.

    The one path from a picture of a handwritten digit to a model input: uploads, training images
    and re-drawn training images all take it, so a model sees in service what it saw in training.
    """
    if len(gray) == 0:
        return np.empty((0, 3, size, size), dtype=np.uint8)
    if input_style == "digits":
        return upscale_digits(np.stack([frame_digit(ink_image(g)) for g in gray])[:, None], size)
    if input_style == "mnist":
        return pad_mnist(np.stack([frame_mnist(drawn_ink(g)) for g in gray])[:, None], size)
    raise ValueError(f"input style {input_style!r} does not frame handwriting")


def unnormalize(x: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Normalized model inputs float32 [N, 3, H, W] -> their pixels on the 0..1 scale (load_image's last step
    undone)."""
    return x * _channels(config.std) + _channels(config.mean)


def _channels(values: tuple[float, ...]) -> np.ndarray:
    """A per-channel mean or std -> float32 [3, 1, 1], to broadcast over [..., 3, H, W]."""
    return np.array(values, dtype=np.float32).reshape(3, 1, 1)


def decoded_bytes(img: Image.Image) -> int:
    """What decoding ``img`` costs, from its header alone: width x height x bytes per pixel of its mode, at least
    RGB_BYTES_PER_PIXEL (a 16-bit gray pixel counts 3, a 16-bit RGBA one 8, a 1-bit one 3)."""
    mode = ImageMode.getmode(img.mode)
    per_pixel = len(mode.bands) * np.dtype(mode.typestr).itemsize
    return img.width * img.height * max(per_pixel, RGB_BYTES_PER_PIXEL)


def _too_large(what: str, max_decoded_bytes: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"{what}; at most {max_decoded_bytes:,} decoded bytes are accepted (width x height x bytes "
        f"per pixel, at least {RGB_BYTES_PER_PIXEL})"
    )


def decode_image(data: bytes, draft_size: int, max_decoded_bytes: int = MAX_DECODED_BYTES) -> Image.Image:
    """Untrusted bytes -> an 8-bit RGB Pillow image; JPEGs decoded at no less than ``draft_size``. Raises
    ImageTooLarge, judged from the header before any pixel is decoded, when ``decoded_bytes`` is over
    ``max_decoded_bytes``."""
    if not data:
        raise ImageError("empty image data")
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)  # an ImageFile, later its oriented RGB copy
        # Image.open has read the header only: refuse here what would be too large to decode
        if (cost := decoded_bytes(img)) > max_decoded_bytes:
            raise _too_large(
                f"image is {img.width}x{img.height} pixels of mode {img.mode}: {cost:,} bytes decoded",
                max_decoded_bytes,
            )
        img.draft("RGB", (draft_size, draft_size))  # JPEG only: let the decoder downscale by up to 8x, cheaply
        img.load()
        img = _to_rgb(ImageOps.exif_transpose(img))  # camera photos: apply the orientation tag
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own limit, far above ours, refused while opening
        raise _too_large(f"image is too large to decode ({e})", max_decoded_bytes) from None
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
# mnist style: ink whose mean width (shading_width) is more than this share of the image's shorter side
# is shading, not strokes, and counts as no ink: smooth gradients measure 0.37-0.53 of the side at any
# size; drawn and typed digits at most 0.09 (bench/drawn_digits.py), MNIST's fattest digit 0.19
MAX_STROKE_FRACTION = 0.25
BORDER_FRACTION = 0.05  # the border band whose median is the background


def ink_image(gray: np.ndarray) -> np.ndarray:
    """Grayscale float32 [H, W] in 0..1 -> ink float32 [H, W] in 0..1: background 0, ink 1, whichever the polarity.

    All zeros when there is no ink: a flat image, or one whose brightest (darkest) 0.1 % is within
    MIN_INK_CONTRAST of the background.
    """
    h, w = gray.shape
    band = max(1, round(BORDER_FRACTION * min(h, w)))
    border = np.concatenate(
        [gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(), gray[:, -band:].ravel()]
    )
    background = _lower_median(border)
    if background > 0.5:  # dark ink on a light background (paper, a drawing app): invert
        gray, background = 1 - gray, 1 - background
    peak = _quantile(gray.ravel(), INK_PEAK_QUANTILE)
    if peak - background < MIN_INK_CONTRAST:
        return np.zeros_like(gray)
    return np.clip((gray - background) / (peak - background), 0, 1)


def _lower_median(values: np.ndarray) -> np.float32:
    """The lower of the two middle values of an even count (the sample itself, never a mean of two)."""
    middle = (len(values) - 1) // 2
    return np.partition(values, middle)[middle]


def _quantile(values: np.ndarray, q: float) -> np.float32:
    """The ``q`` quantile of float32 ``values`` [n], interpolated linearly between the two order statistics around
    rank q * (n - 1), in float32 throughout."""
    rank = np.float32(q) * np.float32(len(values) - 1)
    below = int(rank)
    above = min(below + 1, len(values) - 1)
    ordered = np.partition(values, (below, above))
    low, high, weight = ordered[below], ordered[above], rank - np.float32(below)
    # the lerp from the nearer end: exact at both ends, and monotonic
    return low + weight * (high - low) if weight < 0.5 else high - (high - low) * (1 - weight)


def drawn_ink(gray: np.ndarray) -> np.ndarray:
    """``ink_image``, and all zeros too for ink shaded smoothly rather than drawn (a colour gradient, a
    vignette): ink whose ``shading_width`` is more than MAX_STROKE_FRACTION of the image's shorter side.

    The mnist style's first step. The digits style keeps ``ink_image`` alone: its training images, 8x8
    scans upscaled bilinearly to 32x32, are blurred blobs up to 0.35 of their side wide.
    """
    ink = ink_image(gray)
    if shading_width(ink) > MAX_STROKE_FRACTION * min(ink.shape):
        return np.zeros_like(ink)
    return ink


def shading_width(ink: np.ndarray) -> float:
    """The mean width in pixels of what is inked in [H, W] (0..1): 2 * mass / total variation.

    stroke_width's 2 * area / perimeter, for gray ink: a stroke w px wide has mass L*w and variation
    2L across its edges. A smooth gradient over a whole image of side N has mass ~N^2/2 and
    variation ~N: about half the side, where a drawn digit's strokes are a few % of it.
    """
    variation = float(np.abs(np.diff(ink, axis=0)).sum() + np.abs(np.diff(ink, axis=1)).sum())
    return 2 * float(ink.sum()) / variation if variation else float("inf")


def frame_digit(ink: np.ndarray) -> np.ndarray:
    """Ink float32 [H, W] in 0..1 -> the float32 8x8 training frame, ink in 0..1 in steps of 1/16.

    Crop to the bounding box of ink > INK_THRESHOLD, centre it in a square whose side is the box's
    longer side, resize that to a 32x32 bitmap, binarize, widen thin strokes, and count each 4x4
    block. An image with no ink gives an all-zero frame.
    """
    # the scans were written with a broad pen (strokes 4.9 px wide in the 32 px bitmap, median); a
    # ballpoint line, a canvas brush or a typeface is often 2-3 px there: bitmap widens thinner strokes
    drawn = draw_bitmap(ink, DIGIT_BITMAP, MIN_STROKE_PX)
    if drawn is None:
        return np.zeros((DIGIT_GRID, DIGIT_GRID), dtype=np.float32)
    return block_mean(drawn, DIGIT_BITMAP // DIGIT_GRID)  # [8, 8], multiples of 1/16


def draw_bitmap(ink: np.ndarray, size: int, min_stroke_px: float) -> np.ndarray | None:
    """Ink float32 [H, W] in 0..1 -> the digit drawn as a binary bitmap bool [size, size]; None: no ink.

    Crop to the bounding box of ink > INK_THRESHOLD, centre it in a square whose side is the box's longer side,
    resample that to ``size`` (area-averaged when shrinking), binarize, and widen strokes thinner than
    ``min_stroke_px`` (stroke_width) to about that.
    """
    inked = ink > INK_THRESHOLD
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    if len(rows) == 0:
        return None
    box = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # [h, w]
    h, w = box.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.pad(box, ((top, side - h - top), (left, side - w - left)))  # [side, side]
    coverage = resample(square, size)  # [size, size]
    # a pen stroke thinner than a bitmap pixel (a 2 px line on a 200 px digit) averages below 0.5
    # everywhere, so the threshold follows the darkest pixel down
    drawn = coverage > min(INK_THRESHOLD, INK_THRESHOLD * float(coverage.max()))
    width = stroke_width(drawn)
    if width < min_stroke_px:
        drawn = dilate(drawn, round((min_stroke_px - width) / 2))  # pixels added on each side of a stroke
    return drawn


def resample(images: np.ndarray, size: int) -> np.ndarray:
    """Images float32 [..., H, W] -> [..., size, size], filtered by ``resize_taps``: each row, then each column."""
    across = _resample_last_axis(images, size)  # [..., H, size]
    return _resample_last_axis(across.swapaxes(-1, -2), size).swapaxes(-1, -2)


def _resample_last_axis(images: np.ndarray, size: int) -> np.ndarray:
    """[..., n] -> [..., size]: each output pixel its taps' weighted sum, added up tap by tap."""
    index, weights = resize_taps(images.shape[-1], size)  # [size, taps] each
    out = images[..., index[:, 0]] * weights[:, 0]
    for tap in range(1, weights.shape[1]):
        out += images[..., index[:, tap]] * weights[:, tap]
    return out


@functools.lru_cache(maxsize=1024)  # (box side, bitmap size) pairs: a few hundred at most
def resize_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """How one axis is resampled from ``size_in`` to ``size_out`` pixels: output pixel i is the sum over t of
    input pixel index[i, t] times weights[i, t] (index int [size_out, taps], weights float32 [size_out, taps]).

    A triangle (tent) filter centred on each output pixel, reaching the neighbouring output pixels' centres when
    shrinking (every input pixel counts: anti-aliased, as Pillow resizes) and the neighbouring input pixels'
    centres when enlarging (plain bilinear interpolation, pixel centres aligned, the edge pixels repeated); each
    output pixel's weights normalized to sum to 1. Taps past the input's edge, where an output pixel needs fewer
    than its neighbours, weigh 0.
    """
    scale = size_in / size_out
    radius = max(scale, 1.0)  # in input pixels
    centres = (np.arange(size_out) + 0.5) * scale  # [size_out], on the input's axis
    distance = np.abs(np.arange(size_in) + 0.5 - centres[:, None]) / radius  # [size_out, size_in]
    dense = np.clip(1 - distance, 0, None)
    dense /= dense.sum(axis=1, keepdims=True)
    # the triangle's support is one run of input pixels: keep that band
    covered = dense > 0
    first = covered.argmax(axis=1)  # [size_out]
    index = first[:, None] + np.arange(covered.sum(axis=1).max())  # [size_out, taps]
    inside = index < size_in
    index = np.minimum(index, size_in - 1)
    weights = np.where(inside, np.take_along_axis(dense, index, axis=1), 0).astype(np.float32)
    index.flags.writeable = weights.flags.writeable = False  # shared by every caller
    return index, weights


def dilate(drawn: np.ndarray, grow: int) -> np.ndarray:
    """Binary bool [H, W] -> its dilation by a square of side 2 * grow + 1: every pixel within ``grow`` pixels (in
    each axis) of ink becomes ink. Separable: rows, then columns."""
    h, w = drawn.shape
    padded = np.pad(drawn, grow)  # [H + 2 grow, W + 2 grow]
    across = np.logical_or.reduce([padded[:, d : d + w] for d in range(2 * grow + 1)])  # [H + 2 grow, W]
    return np.logical_or.reduce([across[d : d + h] for d in range(2 * grow + 1)])  # [H, W]


def block_mean(drawn: np.ndarray, block: int) -> np.ndarray:
    """Binary bool [H, W] -> float32 [H / block, W / block]: the share of ink in each block x block square."""
    h, w = drawn.shape
    counts = drawn.reshape(h // block, block, w // block, block).sum(axis=(1, 3), dtype=np.float32)
    return counts / (block * block)


def stroke_width(drawn: np.ndarray) -> float:
    """Mean stroke width in pixels of a binary image bool [H, W]: 2 * area / perimeter.

    A stroke of length L and width w has area L*w and perimeter 2L + 2w (pixel edges between ink and
    background), so the ratio is w * L / (L + w): the width, for strokes much longer than wide.
    """
    ink = np.pad(drawn, 1)  # background all around
    perimeter = np.count_nonzero(ink[1:] != ink[:-1]) + np.count_nonzero(ink[:, 1:] != ink[:, :-1])
    return 2 * np.count_nonzero(ink) / perimeter if perimeter else 0.0


# ---------------------------------------------------------------------------------------------
# mnist: the MNIST recipe (LeCun et al.): the digit's box scaled to 20x20, keeping its aspect ratio,
# anti-aliased, and centred by its centre of mass in a 28x28 field

MNIST_FIELD = 28  # px a side of an MNIST image
MNIST_BOX = 20  # the longer side of the digit's bounding box, in MNIST pixels
MNIST_SUPERSAMPLE = 4  # the box is drawn as a 80x80 bitmap, then area-averaged 4x4: gray edges as MNIST's
MNIST_MIN_STROKE_PX = 6.6  # in that 80 px bitmap: the 25th percentile of MNIST's training digits (median 7.8)


def frame_mnist(ink: np.ndarray) -> np.ndarray:
    """Ink float32 [H, W] in 0..1 -> a float32 28x28 MNIST frame, ink in 0..1 in steps of 1/16.

    Crop to the bounding box of ink > INK_THRESHOLD, centre it in a square, draw that as an 80x80
    bitmap (binarized; strokes thinner than MNIST's widened), area-average it to 20x20 and put it
    where its centre of mass lands on the field's centre (the whole box kept inside the field).
    An image with no ink gives an all-zero frame.
    """
    field = np.zeros((MNIST_FIELD, MNIST_FIELD), dtype=np.float32)
    drawn = draw_bitmap(ink, MNIST_BOX * MNIST_SUPERSAMPLE, MNIST_MIN_STROKE_PX)
    if drawn is None:
        return field
    digit = block_mean(drawn, MNIST_SUPERSAMPLE)  # [20, 20], multiples of 1/16
    # centre of mass -> the field's centre, in whole pixels, the box inside the field
    mass = digit.sum()
    centre = (MNIST_FIELD - 1) / 2
    grid = np.arange(MNIST_BOX)
    row_com, col_com = float(digit.sum(1) @ grid / mass), float(digit.sum(0) @ grid / mass)
    room = MNIST_FIELD - MNIST_BOX
    y0 = min(room, max(0, round(centre - row_com)))
    x0 = min(room, max(0, round(centre - col_com)))
    field[y0 : y0 + MNIST_BOX, x0 : x0 + MNIST_BOX] = digit
    return field


def pad_mnist(frames: np.ndarray, size: int) -> np.ndarray:
    """MNIST frames float32 [N, 1, 28, 28] of ink in 0..1 -> uint8 RGB [N, 3, size, size]: zero border, gray on
    R, G, B."""
    pad = size - MNIST_FIELD
    if pad < 0:
        raise ValueError(f"an MNIST frame needs an image of at least {MNIST_FIELD} px, not {size}")
    padded = np.pad(frames, ((0, 0), (0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))
    return _rgb_bytes(padded)


def upscale_digits(grid: np.ndarray, size: int) -> np.ndarray:
    """Frames float32 [N, 1, 8, 8] of ink in 0..1 -> uint8 RGB [N, 3, size, size]: how every training image was
    made.

    Bilinear upscaling keeps strokes smooth; the same image on all three channels makes it RGB.
    """
    return _rgb_bytes(resample(grid, size))


def _rgb_bytes(gray: np.ndarray) -> np.ndarray:
    """float32 [N, 1, H, W] in 0..1 -> uint8 [N, 3, H, W], the same gray on R, G and B (rounded half to even)."""
    levels = np.rint(np.clip(gray, 0, 1) * 255).astype(np.uint8)
    return np.repeat(levels, 3, axis=1)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16-bit gray scaled down, transparency flattened onto BACKGROUND."""
    if img.mode in HIGH_DEPTH_GRAY:
        # full 16-bit range -> 0..255: round(v * 255 / 65535) = round(v / 257), which is never halfway (2v would
        # be an odd multiple of 257), so (v + 128) // 257 in integers, without a float64 copy 8 bytes a pixel
        gray = np.clip(np.asarray(img, dtype=np.int32), 0, 65535)  # [H, W]; mode I may hold any int32
        img = Image.fromarray(((gray + 128) // 257).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    try:
        return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...
    except ValueError as e:
        raise ImageError(f"cannot convert colour mode {img.mode} to RGB: {e}") from None
