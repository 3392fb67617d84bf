"""Rendering a scene to frames, and the per-token labels derived from exactly those pixels.

While painting, every pixel also records which object painted it last (`object_map`), so the token
labels are computed from the same pixels the video shows.

The cell rule (one rule for evidence and for the dense labels): object o is *present* in token cell
(t, i, j) when at least `cfg.evidence_min_pixels` of the cell's pixels (10 % of the cell, 26 of 256 by
default) show o in frame t, or when that cell holds more of o's visible pixels than any other cell in
frame t (its anchor cell; ties go to the first cell in row-major order), so every visible object is
present somewhere. The evidence mask is "some target is present". A cell's colour/shape label is
that of the present target with most pixels there, else of the present distractor with most pixels,
else 0 (background).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cacovid.data.synthetic.config import WorldConfig
from cacovid.data.synthetic.palette import COLORS, color_label, outline_color, shape_label, sprite
from cacovid.data.synthetic.scene import Scene, SceneObject

__all__ = ["Rendered", "cell_counts", "object_pixels", "presence", "render_scene"]


@dataclass
class Rendered:
    """Pixels and labels of one scene. g = token_grid.

    - `frames` (T, H, W, 3) uint8.
    - `object_map` (T, H, W) int16: 1 + index into `scene.objects` of the object shown, 0 = background.
    - `present` (T, g, g, n_objects) bool: the cell rule above, per object.
    - `token_object` (T, g, g) int8: 1 + index of the labelled object per cell, 0 = background.
    - `token_color`, `token_shape` (T, g, g) int8: 1-based palette labels, 0 = background.
    - `evidence` (T, g, g) bool: cells where a target is present.
    """

    frames: np.ndarray
    object_map: np.ndarray
    present: np.ndarray
    token_object: np.ndarray
    token_color: np.ndarray
    token_shape: np.ndarray
    evidence: np.ndarray


@lru_cache(maxsize=2048)
def _sprite_offsets(shape: str, size: int, outline: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat offsets y*width + x of every pixel a sprite covers (relative to its top-left), and is_rim."""
    fill, rim = sprite(shape, size, outline)
    ys, xs = np.nonzero(fill | rim)
    offsets, is_rim = ys * width + xs, rim[ys, xs]
    offsets.setflags(write=False)
    is_rim.setflags(write=False)
    return offsets, is_rim


def _object_pixels_at(obj: SceneObject, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into a (T, size, size) video of all pixels `obj` covers, and which are rim.

    Objects must lie fully inside the frame (scene sampling guarantees it); this is checked.
    """
    frames = np.flatnonzero(obj.visible)
    pos = obj.positions[frames]
    if frames.size and (pos.min() < 0 or pos.max() > size - obj.extent):
        raise ValueError(f"{obj.role} {obj.color} {obj.shape} leaves the {size}x{size} frame")
    offsets, is_rim = _sprite_offsets(obj.shape, obj.size, obj.outline, size)
    corner = (frames * size + pos[:, 0]) * size + pos[:, 1]
    return (corner[:, None] + offsets[None, :]).ravel(), np.tile(is_rim, frames.size)


def object_pixels(obj: SceneObject, cfg: WorldConfig) -> np.ndarray:
    """(T, H, W) bool: the pixels `obj` covers when drawn alone (fill and rim)."""
    size = cfg.frame_size
    out = np.zeros(cfg.frames * size * size, dtype=bool)
    out[_object_pixels_at(obj, size)[0]] = True
    return out.reshape(cfg.frames, size, size)


def cell_counts(mask: np.ndarray, cell: int) -> np.ndarray:
    """(T, H, W) bool -> (T, H/cell, W/cell) int: pixels set in each token cell."""
    T, H, W = mask.shape
    return mask.reshape(T, H // cell, cell, W // cell, cell).sum(axis=(2, 4))


def presence(counts: np.ndarray, min_pixels: int) -> np.ndarray:
    """Apply the cell rule to pixel counts (T, g, g, n) of n objects -> (T, g, g, n) bool."""
    T, g, _, n = counts.shape
    flat = counts.reshape(T, g * g, n)
    present = flat >= min_pixels
    anchor = flat.argmax(axis=1)  # (T, n): first cell with the most pixels
    t_idx, o_idx = np.nonzero(flat.sum(axis=1) > 0)
    present[t_idx, anchor[t_idx, o_idx], o_idx] = True
    return present.reshape(T, g, g, n)


@lru_cache(maxsize=16)
def _cell_index(frames: int, size: int, grid: int) -> np.ndarray:
    """(T*H*W,) int64: for every pixel of the video, its token index t*g*g + i*g + j."""
    rows = np.arange(size) // (size // grid)
    cell_id = rows[:, None] * grid + rows[None, :]
    index = (np.arange(frames)[:, None, None] * (grid * grid) + cell_id[None]).ravel().astype(np.int64)
    index.setflags(write=False)
    return index


def render_scene(scene: Scene, cfg: WorldConfig) -> Rendered:
    """Paint the scene (background, then objects in order) and derive every per-token label."""
    T, size, g, cell = cfg.frames, cfg.frame_size, cfg.token_grid, cfg.cell_size
    frames = np.empty((T, size, size, 3), dtype=np.uint8)
    frames[:] = scene.background
    object_map = np.zeros((T, size, size), dtype=np.int16)
    pixels, labels_flat = frames.reshape(-1, 3), object_map.reshape(-1)
    drawn = []
    for k, obj in enumerate(scene.objects, start=1):
        color = np.rint(np.asarray(COLORS[obj.color]) * obj.brightness).astype(np.uint8)
        index, rim = _object_pixels_at(obj, size)
        pixels[index] = color
        if obj.outline:
            pixels[index[rim]] = np.asarray(outline_color(obj.color), np.uint8)
        labels_flat[index] = k
        drawn.append(index)

    # Pixel counts per (frame, cell, object) over the pixels each object still shows after the
    # objects drawn later covered it.
    cell_index = _cell_index(T, size, g)
    counts = np.empty((T * g * g, len(scene.objects)), dtype=np.int64)
    for k, index in enumerate(drawn):
        shown = index[labels_flat[index] == k + 1]
        counts[:, k] = np.bincount(cell_index[shown], minlength=T * g * g)
    counts = counts.reshape(T, g, g, -1)
    present = presence(counts, cfg.evidence_min_pixels)

    is_target = np.array([o.is_target for o in scene.objects], dtype=bool)
    # Targets outrank distractors; among equals the one with most pixels wins.
    score = np.where(present, counts + is_target * (cell * cell + 1), -1)
    winner = np.where(present.any(axis=-1), score.argmax(axis=-1) + 1, 0)
    color_of = np.array([0] + [color_label(o.color) for o in scene.objects], dtype=np.int8)
    shape_of = np.array([0] + [shape_label(o.shape) for o in scene.objects], dtype=np.int8)
    return Rendered(
        frames=frames,
        object_map=object_map,
        present=present,
        token_object=winner.astype(np.int8),
        token_color=color_of[winner],
        token_shape=shape_of[winner],
        evidence=present[..., is_target].any(axis=-1),
    )
