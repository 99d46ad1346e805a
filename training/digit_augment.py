"""Augmentation for the digits models: how people draw, then the device's own preprocessing.

The scikit-learn digits are tidy scans: upright, fill-the-frame, one stroke width, white on black.
Uploads are not. Each training batch is therefore re-drawn before it is framed again exactly as an
upload would be (shared/preprocess.py: ink_image -> frame_digit -> upscale_digits):

    uint8 [B, 3, 32, 32] training images -> ink [B, 1, 64, 64] (bilinear, finer grid for the warps)
      -> random affine: rotation +-15 deg, scale 0.7..1.05 per axis, shear +-0.2, shift +-10 %
      -> stroke width: dilate (3x3 or 5x5 max) or erode (3x3 min) or keep, one third each
      -> blur: Gaussian, sigma 0..1.5 px, half the images
      -> contrast and polarity: ink level 0.35..1 over a background 0..0.3, noise, inverted half the time
      -> ink_image -> frame_digit -> upscale_digits                          -> uint8 [B, 3, 32, 32]

Everything draws from the caller's generator, so a seeded run repeats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shared.preprocess import frame_digit, ink_image, upscale_digits

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
    forward = torch.stack([torch.stack([cos * sx, (cos * shear - sin) * sy], -1),
                           torch.stack([sin * sx, (sin * shear + cos) * sy], -1)], 1)  # [B, 2, 2]
    inverse = torch.linalg.inv(forward)
    shift = torch.stack([_uniform(b, -2 * MAX_SHIFT, 2 * MAX_SHIFT, generator) for _ in range(2)], -1)
    theta = torch.cat([inverse, shift[:, :, None]], 2)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(ink.shape), align_corners=False)
    return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _stroke_width(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    choice = torch.randint(0, 4, (ink.shape[0],), generator=generator)[:, None, None, None]
    thick = F.max_pool2d(ink, 3, 1, 1)
    thicker = F.max_pool2d(ink, 5, 1, 2)
    thin = -F.max_pool2d(-ink, 3, 1, 1)
    return torch.where(choice == 0, thick, torch.where(choice == 1, thicker, torch.where(choice == 2, thin, ink)))


def _blur(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    b = ink.shape[0]
    sigma = _uniform(b, 0.05, MAX_BLUR_SIGMA, generator) * (torch.rand(b, generator=generator) < 0.5)
    offsets = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))  # [B, 7]
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


def augment_digits(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 [B, 3, 32, 32] digits -> re-drawn, re-framed uint8 [B, 3, 32, 32] (CPU generator)."""
    size = images.shape[-1]
    ink = images[:, :1].float().cpu() / 255  # [B, 1, 32, 32]: the three channels are equal
    ink = F.interpolate(ink, size=WORK_SIZE, mode="bilinear", align_corners=False)
    gray = _contrast_and_polarity(_blur(_stroke_width(_warp(ink, generator), generator), generator), generator)
    frames = torch.stack([frame_digit(ink_image(g[0])) for g in gray])  # [B, 8, 8]
    return upscale_digits(frames[:, None], size).to(images.device)
