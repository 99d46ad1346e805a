"""Image bytes -> normalized model input, and refusal of everything else with ImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from spikebottlenet.shared import preprocess
from spikebottlenet.shared.backbones import SpikingResNetConfig
from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import ImageError, ImageTooLarge, load_image

CONFIG = ModelConfig()  # 32x32, CIFAR-100 mean and std
MEAN = np.array(CONFIG.mean, dtype=np.float32).reshape(3, 1, 1)
STD = np.array(CONFIG.std, dtype=np.float32).reshape(3, 1, 1)


def encoded(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def normalized(rgb: np.ndarray) -> np.ndarray:
    """The expected model input for 8-bit RGB pixels [H, W, 3]."""
    return (rgb.astype(np.float32).transpose(2, 0, 1) / 255 - MEAN) / STD


def test_an_rgb_png_of_the_model_size_is_normalized_exactly() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = load_image(encoded(Image.fromarray(rgb)), CONFIG)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x, normalized(rgb), atol=1e-6)


def test_other_sizes_are_resized_to_the_configured_image_size() -> None:
    config = ModelConfig(backbone=SpikingResNetConfig(image_size=16))
    img = Image.new("RGB", (90, 40), (200, 10, 30))
    x = load_image(encoded(img, "JPEG", quality=95), config)
    assert x.shape == (3, 16, 16)
    # a flat colour stays (nearly) flat through JPEG and resizing
    assert np.allclose(x, normalized(np.full((16, 16, 3), (200, 10, 30))), atol=0.1)


def flat(value: tuple[int, int, int]) -> np.ndarray:
    return normalized(np.full((32, 32, 3), value, dtype=np.uint8))


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        (Image.new("L", (32, 32), 128), (128, 128, 128)),
        (Image.new("1", (32, 32), 1), (255, 255, 255)),
        (Image.new("CMYK", (32, 32), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("RGBA", (32, 32), (0, 0, 0, 0)), (255, 255, 255)),  # fully transparent: the white background
        (Image.new("RGBA", (32, 32), (0, 0, 255, 255)), (0, 0, 255)),  # opaque: unchanged
        (Image.new("LA", (32, 32), (0, 0)), (255, 255, 255)),
        (Image.new("I;16", (32, 32), 65535), (255, 255, 255)),  # 16-bit white is white, not clipped garbage
        (Image.new("I;16", (32, 32), 257 * 100), (100, 100, 100)),
    ],
    ids=["L", "1", "CMYK", "RGBA transparent", "RGBA opaque", "LA", "I;16 max", "I;16 mid"],
)
def test_colour_modes_become_rgb(img: Image.Image, expected: tuple[int, int, int]) -> None:
    fmt = "TIFF" if img.mode == "CMYK" else "PNG"
    assert np.allclose(load_image(encoded(img, fmt), CONFIG), flat(expected), atol=1e-6)


def test_a_palette_image_with_a_transparent_index_uses_the_background() -> None:
    img = Image.new("P", (32, 32), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert np.allclose(load_image(encoded(img, "PNG"), CONFIG), flat((10, 20, 30)), atol=1e-6)
    assert np.allclose(load_image(encoded(img, "PNG", transparency=1), CONFIG), flat((255, 255, 255)), atol=1e-6)
    assert np.allclose(load_image(encoded(img, "GIF", transparency=1), CONFIG), flat((255, 255, 255)), atol=1e-6)


def test_a_cmyk_jpeg_becomes_rgb() -> None:
    img = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red
    assert np.allclose(load_image(encoded(img, "JPEG", quality=95), CONFIG), flat((255, 0, 0)), atol=0.05)


def test_a_16_bit_rgb_png_keeps_the_high_byte_of_each_channel() -> None:
    assert np.allclose(load_image(png_rgb16((0xFFFF, 0x8000, 0x1234)), CONFIG), flat((255, 128, 18)), atol=1e-6)


def test_a_multi_frame_gif_gives_its_first_frame() -> None:
    red, green, blue = (Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    assert np.allclose(
        load_image(encoded(red, "GIF", save_all=True, append_images=[green, blue]), CONFIG),
        flat((255, 0, 0)),
        atol=1e-6,
    )


def test_the_exif_orientation_is_applied() -> None:
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:, :16] = (255, 0, 0)  # left half red, right half blue
    rgb[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 3  # Orientation: rotated 180 degrees
    x = load_image(encoded(Image.fromarray(rgb), "PNG", exif=exif), CONFIG)
    assert np.allclose(x, normalized(rgb[::-1, ::-1]), atol=1e-6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is not an image", "not an image"),
        (np.random.default_rng(0).bytes(2048), "not an image"),
        (encoded(Image.new("RGB", (32, 32)), "PCX"), "not an image in a supported format"),
        (encoded(Image.new("RGB", (32, 32)), "TGA"), "not an image in a supported format"),
    ],
    ids=["empty", "text", "random", "pcx", "tga"],
)
def test_non_images_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(data, CONFIG)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_truncated_images_are_refused(fmt: str) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(noise), fmt)
    with pytest.raises(ImageError, match="cannot decode the image"):
        load_image(data[: len(data) // 2], CONFIG)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG that declare width x height 8-bit RGB pixels and hold one row of them."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def png_rgb16(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A size x size PNG of 16 bits per channel, every pixel ``rgb`` (0..65535 each); Pillow writes none such."""
    row = b"\x00" + np.tile(np.array(rgb, dtype=">u2"), size).tobytes()  # filter type 0, then the samples
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def png_uniform(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    """A complete PNG of width x height black pixels (colour type 0: gray, 2: RGB, 4: gray + alpha, 6: RGBA),
    compressed one row at a time, so that no buffer of its decoded size is made here: a real encoding of a
    gigapixel-scale decode in kilobytes."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = bytes(1 + -(-width * channels * bit_depth // 8))  # filter type 0, then the samples, whole bytes
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (png_claiming(8_000, 8_000), "8000x8000 pixels of mode RGB: 192,000,000 bytes decoded; at most 67,108,864"),
        # over Pillow's own limit, which refuses it while opening
        (png_claiming(100_000, 100_000), "could be decompression bomb.*; at most 67,108,864"),
        # few pixels a byte, yet each becomes an RGB pixel: 3 bytes
        (png_uniform(7_000, 7_000, 1, 0), "7000x7000 pixels of mode 1: 147,000,000 bytes decoded"),
        (png_uniform(7_000, 7_000, 16, 0), "7000x7000 pixels of mode I;16: 147,000,000 bytes decoded"),
    ],
    ids=["8000x8000 RGB", "100000x100000 RGB", "1-bit 7000x7000", "16-bit 7000x7000"],
)
def test_decompression_bombs_are_refused_from_the_header(data: bytes, message: str) -> None:
    with pytest.raises(ImageTooLarge, match=message):
        load_image(data, CONFIG)


@pytest.mark.parametrize(
    ("img", "fmt", "bytes_per_pixel"),
    [
        (Image.new("1", (40, 30)), "PNG", 3),  # converted to RGB: no pixel costs less
        (Image.new("I;16", (40, 30)), "PNG", 3),
        (Image.new("RGB", (40, 30)), "PNG", 3),
        (Image.new("RGBA", (40, 30)), "PNG", 4),
        (Image.new("I", (40, 30)), "TIFF", 4),  # 32-bit gray
    ],
    ids=["1-bit", "16-bit gray", "RGB", "RGBA", "32-bit gray"],
)
def test_the_decoded_size_budget_counts_bit_depth(img: Image.Image, fmt: str, bytes_per_pixel: int) -> None:
    data, cost = encoded(img, fmt), 40 * 30 * bytes_per_pixel
    assert load_image(data, CONFIG, max_decoded_bytes=cost).shape == (3, 32, 32)
    with pytest.raises(
        ImageTooLarge,
        match=f"40x30 pixels of mode {img.mode}: {cost:,} bytes decoded; at most {cost - 1:,} decoded bytes",
    ):
        load_image(data, CONFIG, max_decoded_bytes=cost - 1)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_high_depth_gray_scales_to_8_bits_rounding_to_nearest(mode: str) -> None:
    values = np.array([[0, 128, 129, 257 * 100 + 128, 257 * 100 + 129, 65535]], dtype=np.int32)
    x = load_image(encoded(Image.fromarray(values.astype(np.uint16)).convert(mode), "TIFF"), CONFIG)
    expected = np.round(values / 257).clip(0, 255).astype(np.uint8)  # [1, 6]
    assert np.allclose(x, load_image(encoded(Image.fromarray(expected, "L")), CONFIG), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# input_style "digits": uploads framed the way the training scans were made

DIGITS = ModelConfig(mean=(0.3, 0.3, 0.3), std=(0.35, 0.35, 0.35), input_style="digits")


def digit_frame_of(img: Image.Image) -> np.ndarray:
    """The model input's pixels (one channel, 0..1) for an upload, the normalization undone."""
    x = load_image(encoded(img), DIGITS)  # [3, 32, 32]
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])  # gray on R, G and B
    return x[0] * 0.35 + 0.3


def canvas_with_rect(size: int, box: tuple[int, int, int, int], ink: int = 255, background: int = 0) -> Image.Image:
    img = Image.new("L", (size, size), background)
    img.paste(ink, box)
    return img


def expected_input(frame: np.ndarray) -> np.ndarray:
    """Model input pixels (0..1, one channel) for an 8x8 frame, by the training recipe."""
    return preprocess.upscale_digits(frame[None, None], 32)[0, 0].astype(np.float32) / 255


def test_a_bar_is_cropped_centred_squared_and_counted_in_4x4_blocks() -> None:
    # a 10 x 40 bar: its box becomes a 40 x 40 square with the bar in columns 15..24, resized to 32:
    # columns 12..19 of the bitmap, i.e. exactly blocks 3 and 4 of every row
    frame = np.zeros((8, 8), dtype=np.float32)
    frame[:, 3:5] = 1.0
    pixels = digit_frame_of(canvas_with_rect(100, (30, 20, 40, 60)))
    assert np.allclose(pixels, expected_input(frame), atol=1 / 255 + 1e-6)


def test_dark_ink_on_light_paper_is_inverted() -> None:
    light_on_dark = digit_frame_of(canvas_with_rect(100, (30, 20, 40, 60), ink=230, background=20))
    dark_on_light = digit_frame_of(canvas_with_rect(100, (30, 20, 40, 60), ink=20, background=230))
    assert np.array_equal(light_on_dark, dark_on_light)


def test_an_off_centre_smaller_digit_gives_the_same_frame() -> None:
    def seven(size: int, offset: tuple[int, int], scale: float) -> Image.Image:
        img = Image.new("L", (size, size), 0)
        ox, oy = offset
        points = [(ox, oy), (ox + 30 * scale, oy), (ox + 12 * scale, oy + 50 * scale)]
        ImageDraw.Draw(img).line(points, fill=255, width=max(1, round(6 * scale)))
        return img

    centred = digit_frame_of(seven(80, (25, 15), 1.0))
    corner = digit_frame_of(seven(300, (5, 8), 2.0))  # twice as large, in the top-left corner
    assert np.abs(centred - corner).mean() < 0.05  # same frame up to a few pixels of resampling


@pytest.mark.parametrize("width", [2, 6, 14])
def test_stroke_thickness_survives_as_ink_not_as_size(width: int) -> None:
    # a vertical stroke of any thickness fills the frame's height: the long side is 32 px, 8 blocks
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line([(100, 20), (100, 180)], fill=0, width=width)
    pixels = digit_frame_of(img)
    rows_with_ink = (pixels > 0.1).any(axis=1)
    assert rows_with_ink[2:30].all()  # top to bottom, whatever the width (which sets only the ink level)


@pytest.mark.parametrize(
    "img",
    [
        Image.new("L", (50, 50), 255),  # all white
        Image.new("L", (50, 50), 0),  # all black
        Image.new("L", (1, 1), 128),  # a single pixel
        Image.new("RGB", (40, 30), (120, 200, 30)),  # a flat colour
        Image.fromarray(
            np.full((64, 64), 128, dtype=np.uint8) + np.random.default_rng(0).integers(0, 8, (64, 64)).astype(np.uint8)
        ),
    ],
    ids=["white", "black", "1x1", "flat-colour", "faint-texture"],
)
def test_an_image_without_ink_becomes_a_blank_frame(img: Image.Image) -> None:
    pixels = digit_frame_of(img)
    assert np.array_equal(pixels, np.zeros((32, 32)))


def test_natural_models_keep_the_plain_resize() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.allclose(load_image(encoded(Image.fromarray(rgb)), CONFIG), normalized(rgb), atol=1e-6)


@pytest.mark.parametrize(("width", "length"), [(1, 20), (2, 20), (4, 24), (6, 28)])
def test_stroke_width_of_a_bar_by_hand(width: int, length: int) -> None:
    bitmap = np.zeros((32, 32), dtype=bool)
    bitmap[2 : 2 + length, 5 : 5 + width] = True
    # area = length * width; perimeter = 2 * length + 2 * width pixel edges
    expected = 2 * length * width / (2 * length + 2 * width)
    assert preprocess.stroke_width(bitmap) == pytest.approx(expected)


def test_a_thin_pen_is_widened_to_the_scans_pen_and_a_broad_one_is_left_alone() -> None:
    def frame_of_line(width: int) -> np.ndarray:
        img = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(img).line([(32, 0), (32, 63)], fill=255, width=width)  # fills the frame's height
        ink = np.asarray(img, dtype=np.float32) / 255
        return preprocess.frame_digit(ink)

    # a 1 px line on a 64 px digit is 0.5 px in the 32 px bitmap: widened to about MIN_STROKE_PX
    thin, broad = frame_of_line(1), frame_of_line(12)
    assert 3.5 <= float(thin.sum(axis=1).mean()) * 4 <= 5.5  # ink per 8x8 row x 4 = bitmap pixels across
    assert float(broad.sum(axis=1).mean()) * 4 == pytest.approx(6.0)  # 12 px of 64 = 6 of 32: unchanged


@pytest.mark.parametrize(("width", "length"), [(1, 20), (3, 20), (8, 30)])
def test_shading_width_of_a_bar_by_hand(width: int, length: int) -> None:
    ink = np.zeros((40, 40), dtype=np.float32)
    ink[5 : 5 + length, 10 : 10 + width] = 0.8
    # mass 0.8 * length * width; variation 0.8 per pixel edge between ink and paper: 2 * length + 2 * width
    expected = 2 * 0.8 * length * width / (0.8 * (2 * length + 2 * width))
    assert preprocess.shading_width(ink) == pytest.approx(expected)


def ramp(size: int, rgb: bool) -> Image.Image:
    """A smooth gradient, like a sky or a vignette: no strokes anywhere."""
    x, y = np.meshgrid(np.linspace(0, 255, size), np.linspace(30, 200, size))
    if rgb:
        return Image.fromarray(np.stack([x, y, np.full_like(x, 128.0)], -1).round().astype(np.uint8))
    return Image.fromarray(x.round().astype(np.uint8), "L")


@pytest.mark.parametrize("size", [24, 64, 300, 1000])
@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "colour"])
def test_a_smooth_gradient_is_shading_not_ink_at_any_size(size: int, rgb: bool) -> None:
    config = ModelConfig(mean=(0.1,) * 3, std=(0.3,) * 3, input_style="mnist")  # one gray on R, G and B
    x = load_image(encoded(ramp(size, rgb)), config)
    assert x.max() == x.min()  # a blank model input: the answer will say so


def test_a_thick_marker_digit_is_still_ink() -> None:
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).ellipse([30, 20, 170, 180], outline=0, width=30)  # a fat 0: strokes 15 % of the side
    config = ModelConfig(mean=(0.1,) * 3, std=(0.3,) * 3, input_style="mnist")
    x = load_image(encoded(img), config)
    assert x.max() > x.min()
