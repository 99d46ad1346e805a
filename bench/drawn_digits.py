"""A held-out set of digits made unlike the training scans, for measuring what uploads get.

    python -m bench.drawn_digits OUT_DIR [--per-method 300] [--seed 0]

writes OUT_DIR/<index>_<label>_<method>.png and OUT_DIR/manifest.json, made in two ways that share
nothing with the scikit-learn scans (8x8, white on black, tidy, frame-filling):

    strokes  each digit as pen strokes (hand-placed polylines and arcs, one or two styles per
             digit: an open or closed 4, a 7 with or without its bar ...), every control point
             jittered, drawn with a round pen 3-14 % of the digit's height thick, rotated up to
             +-12 deg, at a random size and place on a canvas of 48-400 px, in a random gray pair
             of either polarity, sometimes blurred or with paper noise
    fonts    the digit typed in a font from Debian's fonts-dejavu-core and fonts-liberation
             packages (sans, serif, mono, condensed, bold, italic), at several sizes and places,
             either polarity

Everything is drawn from one seeded generator, so the set is the same on every machine with the
same fonts. No training step reads these images: they exist only to be classified.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# The figures in docs/models.md are from this seed's set, generated only after the preprocessing was
# final: seed 0's set was looked at while developing it (its errors showed thin pens), so it is not
# held out any more.
HELD_OUT_SEED = 1

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansCondensed-Oblique.ttf",
    "DejaVuSerif-Bold.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSans-Bold.ttf",
    "LiberationSerif-Regular.ttf",
    "LiberationSerif-Italic.ttf",
    "LiberationMono-Regular.ttf",
    "LiberationSansNarrow-Regular.ttf",
)


class MissingFonts(FileNotFoundError):
    """The Debian font packages the "fonts" half of the set is typed in are not installed."""


def _arc(cx: float, cy: float, rx: float, ry: float, start_deg: float, end_deg: float, n: int = 14):
    """Points on an ellipse from start to end angle (degrees, 0 = right, 90 = down)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start_deg, end_deg, n)
    ]


# Each digit: styles, each a list of strokes, each a list of (x, y) in a unit box (y down),
# about 0.6 wide and 1 high like handwriting.
STROKES: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[_arc(0.5, 0.5, 0.28, 0.45, 0, 360, 24)]],
    1: [[[(0.5, 0.05), (0.5, 0.95)]], [[(0.35, 0.2), (0.52, 0.05), (0.52, 0.95)]]],
    2: [[_arc(0.5, 0.3, 0.26, 0.25, 200, 380) + [(0.25, 0.95), (0.78, 0.95)]]],
    3: [[_arc(0.48, 0.28, 0.25, 0.23, 210, 450) + _arc(0.48, 0.72, 0.27, 0.23, 270, 510)[1:]]],
    4: [
        [[(0.6, 0.95), (0.6, 0.05), (0.2, 0.65), (0.8, 0.65)]],
        [[(0.3, 0.05), (0.25, 0.6), (0.8, 0.6)], [(0.65, 0.3), (0.65, 0.95)]],
    ],
    5: [[[(0.75, 0.06), (0.3, 0.06), (0.27, 0.45)] + _arc(0.48, 0.67, 0.27, 0.28, 240, 490)[1:]]],
    6: [[[(0.68, 0.08), (0.45, 0.25), (0.28, 0.55)] + _arc(0.5, 0.7, 0.23, 0.24, 180, 540)]],
    7: [
        [[(0.22, 0.07), (0.78, 0.07), (0.42, 0.95)]],
        [[(0.22, 0.07), (0.78, 0.07), (0.42, 0.95)], [(0.35, 0.5), (0.72, 0.5)]],
    ],
    8: [[_arc(0.5, 0.27, 0.21, 0.22, 90, 450) + _arc(0.5, 0.72, 0.26, 0.23, 270, 630)]],
    9: [
        [_arc(0.48, 0.3, 0.24, 0.24, 0, 360) + [(0.72, 0.3), (0.62, 0.95)]],
        [_arc(0.48, 0.3, 0.24, 0.24, 0, 360) + [(0.72, 0.3), (0.72, 0.95)]],
    ],
}


def _gray_pair(rng: np.random.Generator) -> tuple[int, int]:
    """(background, ink) gray levels with clear contrast, either polarity."""
    dark, light = int(rng.integers(0, 70)), int(rng.integers(185, 256))
    return (light, dark) if rng.random() < 0.5 else (dark, light)


def _place(rng: np.random.Generator, canvas: int, fill: tuple[float, float]) -> tuple[float, float, float]:
    """A digit height between fill[0] and fill[1] of the canvas, at a random place that keeps it inside."""
    height = canvas * rng.uniform(*fill)
    x0 = rng.uniform(0.05 * canvas, canvas - 0.65 * height - 0.05 * canvas)
    y0 = rng.uniform(0.05 * canvas, max(0.05 * canvas + 1, canvas - height - 0.05 * canvas))
    return height, x0, y0


def draw_strokes(label: int, rng: np.random.Generator) -> Image.Image:
    canvas = int(rng.integers(48, 401))
    background, ink = _gray_pair(rng)
    image = Image.new("L", (canvas, canvas), background)
    draw = ImageDraw.Draw(image)
    height, x0, y0 = _place(rng, canvas, (0.35, 0.85))
    style = STROKES[label][int(rng.integers(len(STROKES[label])))]
    angle = math.radians(rng.uniform(-12, 12))
    slant = rng.uniform(-0.15, 0.15)
    width = max(1, round(height * rng.uniform(0.03, 0.14)))
    for stroke in style:
        points = []
        for x, y in stroke:
            x, y = x + rng.normal(0, 0.025) + slant * (0.5 - y), y + rng.normal(0, 0.025)
            # rotate about the digit's centre, then scale and place
            dx, dy = x - 0.5, y - 0.5
            x, y = 0.5 + dx * math.cos(angle) - dy * math.sin(angle), 0.5 + dx * math.sin(angle) + dy * math.cos(angle)
            points.append((x0 + x * height * 0.65, y0 + y * height))
        draw.line(points, fill=ink, width=width, joint="curve")
        for x, y in (points[0], points[-1]):  # round pen ends
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=ink)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    if rng.random() < 0.3:  # paper or sensor noise
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (canvas, canvas))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return image


def draw_font(label: int, rng: np.random.Generator, fonts: list[Path]) -> Image.Image:
    canvas = int(rng.integers(32, 321))
    background, ink = _gray_pair(rng)
    image = Image.new("L", (canvas, canvas), background)
    font = ImageFont.truetype(
        str(fonts[int(rng.integers(len(fonts)))]), size=max(8, int(canvas * rng.uniform(0.3, 0.8)))
    )
    left, top, right, bottom = font.getbbox(str(label))
    w, h = right - left, bottom - top
    x = rng.uniform(0, max(1, canvas - w)) - left
    y = rng.uniform(0, max(1, canvas - h)) - top
    ImageDraw.Draw(image).text((x, y), str(label), fill=ink, font=font)
    return image


def font_files() -> list[Path]:
    found = [d / name for d in FONT_DIRS for name in FONTS if (d / name).is_file()]
    missing = [name for name in FONTS if not any((d / name).is_file() for d in FONT_DIRS)]
    if missing:
        raise MissingFonts(f"missing fonts {', '.join(missing)}: apt-get install fonts-dejavu-core fonts-liberation")
    return found


def make_set(out: Path, per_method: int = 300, seed: int = HELD_OUT_SEED) -> list[dict[str, object]]:
    """Write the set into ``out``; returns the manifest (file, label, method), balanced over labels."""
    rng = np.random.default_rng(seed)
    fonts = font_files()
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for method in ("strokes", "fonts"):
        for i in range(per_method):
            label = i % 10
            image = draw_strokes(label, rng) if method == "strokes" else draw_font(label, rng, fonts)
            name = f"{len(manifest):04d}_{label}_{method}.png"
            image.save(out / name)
            manifest.append({"file": name, "label": label, "method": method})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-method", type=int, default=300)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    args = parser.parse_args(argv)
    try:
        manifest = make_set(args.out, args.per_method, args.seed)
    except MissingFonts as e:
        print(f"drawn_digits: {e}", file=sys.stderr)
        return 1
    print(f"{len(manifest)} images in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
