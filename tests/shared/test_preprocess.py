"""Image bytes -> normalized model input, and refusal of everything else with ImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from shared import preprocess
from shared.preprocess import ImageError, load_image
from shared.backbones import SpikingResNetConfig
from shared.split_model import ModelConfig

CONFIG = ModelConfig()  # 32x32, CIFAR-100 mean and std
MEAN = torch.tensor(CONFIG.mean).view(3, 1, 1)
STD = torch.tensor(CONFIG.std).view(3, 1, 1)


def encoded(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def normalized(rgb: np.ndarray) -> torch.Tensor:
    """The expected model input for 8-bit RGB pixels [H, W, 3]."""
    return (torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1) - MEAN) / STD


def test_an_rgb_png_of_the_model_size_is_normalized_exactly() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = load_image(encoded(Image.fromarray(rgb)), CONFIG)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x, normalized(rgb), atol=1e-6)


def test_other_sizes_are_resized_to_the_configured_image_size() -> None:
    config = ModelConfig(backbone=SpikingResNetConfig(image_size=16))
    img = Image.new("RGB", (90, 40), (200, 10, 30))
    x = load_image(encoded(img, "JPEG", quality=95), config)
    assert x.shape == (3, 16, 16)
    # a flat colour stays (nearly) flat through JPEG and resizing
    assert torch.allclose(x, normalized(np.full((16, 16, 3), (200, 10, 30))), atol=0.1)


def flat(value: tuple[int, int, int]) -> torch.Tensor:
    return normalized(np.full((32, 32, 3), value, dtype=np.uint8))


@pytest.mark.parametrize(("img", "expected"), [
    (Image.new("L", (32, 32), 128), (128, 128, 128)),
    (Image.new("1", (32, 32), 1), (255, 255, 255)),
    (Image.new("CMYK", (32, 32), (0, 255, 255, 0)), (255, 0, 0)),
    (Image.new("RGBA", (32, 32), (0, 0, 0, 0)), (255, 255, 255)),  # fully transparent: the white background
    (Image.new("RGBA", (32, 32), (0, 0, 255, 255)), (0, 0, 255)),  # opaque: unchanged
    (Image.new("LA", (32, 32), (0, 0)), (255, 255, 255)),
    (Image.new("I;16", (32, 32), 65535), (255, 255, 255)),  # 16-bit white is white, not clipped garbage
    (Image.new("I;16", (32, 32), 257 * 100), (100, 100, 100)),
], ids=["L", "1", "CMYK", "RGBA transparent", "RGBA opaque", "LA", "I;16 max", "I;16 mid"])
def test_colour_modes_become_rgb(img: Image.Image, expected: tuple[int, int, int]) -> None:
    fmt = "TIFF" if img.mode == "CMYK" else "PNG"
    assert torch.allclose(load_image(encoded(img, fmt), CONFIG), flat(expected), atol=1e-6)


def test_a_palette_image_with_a_transparent_index_uses_the_background() -> None:
    img = Image.new("P", (32, 32), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert torch.allclose(load_image(encoded(img, "PNG"), CONFIG), flat((10, 20, 30)), atol=1e-6)
    assert torch.allclose(load_image(encoded(img, "PNG", transparency=1), CONFIG), flat((255, 255, 255)), atol=1e-6)
    assert torch.allclose(load_image(encoded(img, "GIF", transparency=1), CONFIG), flat((255, 255, 255)), atol=1e-6)


def test_a_cmyk_jpeg_becomes_rgb() -> None:
    img = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red
    assert torch.allclose(load_image(encoded(img, "JPEG", quality=95), CONFIG), flat((255, 0, 0)), atol=0.05)


def test_a_16_bit_rgb_png_keeps_the_high_byte_of_each_channel() -> None:
    assert torch.allclose(load_image(png_rgb16((0xFFFF, 0x8000, 0x1234)), CONFIG), flat((255, 128, 18)), atol=1e-6)


def test_a_multi_frame_gif_gives_its_first_frame() -> None:
    red, green, blue = (Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    assert torch.allclose(load_image(encoded(red, "GIF", save_all=True, append_images=[green, blue]), CONFIG),
                          flat((255, 0, 0)), atol=1e-6)


def test_the_exif_orientation_is_applied() -> None:
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:, :16] = (255, 0, 0)  # left half red, right half blue
    rgb[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 3  # Orientation: rotated 180 degrees
    x = load_image(encoded(Image.fromarray(rgb), "PNG", exif=exif), CONFIG)
    assert torch.allclose(x, normalized(rgb[::-1, ::-1].copy()), atol=1e-6)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"),
    (b"hello, this is not an image", "not an image"),
    (np.random.default_rng(0).bytes(2048), "not an image"),
    (encoded(Image.new("RGB", (32, 32)), "PCX"), "not an image in a supported format"),
    (encoded(Image.new("RGB", (32, 32)), "TGA"), "not an image in a supported format"),
], ids=["empty", "text", "random", "pcx", "tga"])
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
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def png_rgb16(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A size x size PNG of 16 bits per channel, every pixel ``rgb`` (0..65535 each); Pillow writes none such."""
    row = b"\x00" + np.tile(np.array(rgb, dtype=">u2"), size).tobytes()  # filter type 0, then the samples
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("side", "message"), [
    (8_000, "8000x8000 pixels; at most 50,000,000"),  # over our limit
    (100_000, "could be decompression bomb"),  # over Pillow's own, which refuses it while opening
])
def test_decompression_bombs_are_refused_from_the_header(side: int, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(png_claiming(side, side), CONFIG)


def test_the_pixel_limit_applies_to_real_images(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded(Image.new("RGB", (40, 30)))
    load_image(data, CONFIG)
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 40 * 30 - 1)
    with pytest.raises(ImageError, match="40x30 pixels"):
        load_image(data, CONFIG)
