"""Colours, shapes and their pixel masks: the world's visual alphabet.

Every colour and shape is one lowercase word so questions stay word-tokenisable. The index of a name
in `COLOR_NAMES` / `SHAPE_NAMES`, plus one, is the label used in the dense per-token maps
(`token_color`, `token_shape`); 0 means background. Masks are rasterised with 4x4 supersampling
(a pixel belongs to the shape when at least half of it is covered) and cached, because every object
keeps its size for the whole video.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "COLOR_NAMES",
    "SHAPE_NAMES",
    "color_label",
    "outline_color",
    "shape_label",
    "shape_mask",
    "sprite",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 80, 245),
    "yellow": (245, 225, 30),
    "magenta": (220, 40, 220),
    "cyan": (30, 215, 225),
    "orange": (255, 135, 0),
    "white": (250, 250, 250),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SHAPE_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "diamond",
    "ring",
    "star",
    "crescent",
)
_SUPERSAMPLE = 4


def color_label(name: str) -> int:
    """1-based label of a colour in the dense maps (0 is background)."""
    return COLOR_NAMES.index(name) + 1


def shape_label(name: str) -> int:
    """1-based label of a shape in the dense maps (0 is background)."""
    return SHAPE_NAMES.index(name) + 1


def outline_color(name: str) -> tuple[int, int, int]:
    """Black around light colours, white around dark ones: the high-contrast rim of salient objects."""
    r, g, b = COLORS[name]
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 110 else (255, 255, 255)


def _polygon(points: list[tuple[float, float]], n: int) -> np.ndarray:
    """Coverage (n, n) in [0, 1] of a polygon given in [-1, 1] coordinates (y down)."""
    image = Image.new("L", (n, n), 0)
    ImageDraw.Draw(image).polygon([((x + 1) / 2 * n, (y + 1) / 2 * n) for x, y in points], fill=255)
    return np.asarray(image, dtype=np.float32) / 255.0


def _star_points() -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        radius = 1.0 if k % 2 == 0 else 0.45
        angle = -np.pi / 2 + k * np.pi / 5
        pts.append((radius * float(np.cos(angle)), radius * float(np.sin(angle)) + 0.1))
    return pts


def _coverage(shape: str, n: int) -> np.ndarray:
    """Fine-grid coverage (n, n) of `shape` in its [-1, 1]^2 box."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    r2 = x * x + y * y
    if shape == "circle":
        return (r2 <= 1.0).astype(np.float32)
    if shape == "square":
        return ((np.abs(x) <= 0.85) & (np.abs(y) <= 0.85)).astype(np.float32)
    if shape == "triangle":
        return _polygon([(0.0, -0.95), (1.0, 0.85), (-1.0, 0.85)], n)
    if shape == "cross":
        arm = 0.34
        return (((np.abs(x) <= arm) & (np.abs(y) <= 1)) | ((np.abs(y) <= arm) & (np.abs(x) <= 1))).astype(
            np.float32
        )
    if shape == "diamond":
        return (np.abs(x) + np.abs(y) <= 1.0).astype(np.float32)
    if shape == "ring":
        return ((r2 <= 1.0) & (r2 >= 0.5**2)).astype(np.float32)
    if shape == "star":
        return _polygon(_star_points(), n)
    if shape == "crescent":
        return ((r2 <= 1.0) & ((x - 0.45) ** 2 + (y + 0.15) ** 2 > 0.75**2)).astype(np.float32)
    raise ValueError(f"unknown shape {shape!r}; known shapes: {SHAPE_NAMES}")


@lru_cache(maxsize=1024)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """(size, size) bool mask of `shape` filling a size x size box. Read-only (cached)."""
    if size < 1:
        raise ValueError(f"shape size must be >= 1, got {size}")
    n = size * _SUPERSAMPLE
    cover = _coverage(shape, n).reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))
    mask = cover >= 0.5
    mask.setflags(write=False)
    return mask


def _dilate(mask: np.ndarray, width: int) -> np.ndarray:
    """Dilate a bool mask by `width` pixels with a disc, padding the canvas by `width` on each side."""
    h, w = mask.shape
    out = np.zeros((h + 2 * width, w + 2 * width), dtype=bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy * dy + dx * dx <= width * width + width:
                out[width + dy : width + dy + h, width + dx : width + dx + w] |= mask
    return out


@lru_cache(maxsize=1024)
def sprite(shape: str, size: int, outline: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fill, rim) bool masks, each (size + 2*outline)^2: the shape and its outline ring around it."""
    if outline < 0:
        raise ValueError(f"outline width must be >= 0, got {outline}")
    fill = shape_mask(shape, size)
    if outline == 0:
        rim = np.zeros_like(fill)
    else:
        fill = np.pad(fill, outline)
        rim = _dilate(shape_mask(shape, size), outline) & ~fill
    fill.setflags(write=False)
    rim.setflags(write=False)
    return fill, rim
