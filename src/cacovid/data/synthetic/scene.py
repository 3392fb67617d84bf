"""Scene sampling: background, moving distractors, and briefly visible targets.

A scene is pure geometry (which object is where in which frame); `render.py` turns it into pixels.
Design choices that keep the benchmark honest:

- Distractors are present in every frame and move; the targets move too (only the `motion` family's
  target moves fast and along an axis), so "the object that moves" does not find the target.
- Ordinary distractor sizes overlap the target size range on both sides, so the target is neither
  always the smallest object nor the only small one.
- `num_salient` distractors are large, brighter and outlined (scaled by `distractor_salience`): they
  attract attention-style token selection but never carry the answer.
- Targets avoid overlapping distractors where possible and are drawn on top, so they are always seen.
- Decoys (`num_decoys`) come and go exactly like targets (same sizes, durations and motion) and are
  drawn beneath them: only the question tells a decoy from the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cacovid.data.synthetic.config import WorldConfig
from cacovid.data.synthetic.palette import COLOR_NAMES, SHAPE_NAMES

__all__ = ["DIRECTIONS", "Scene", "SceneObject", "TargetSpec", "sample_scene"]

# Unit steps (dy, dx) in image coordinates (y grows downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
_PLACEMENT_TRIES = 40
# Colour scale of targets and ordinary distractors; salient distractors go up to full brightness.
ORDINARY_BRIGHTNESS = 0.82


@dataclass(frozen=True)
class TargetSpec:
    """What a question family asks for: a target's look, the frames it is visible in, its motion.

    `frames` are sorted frame indices. `direction` is a key of DIRECTIONS for a fast axis-aligned move
    (the `motion` family), or None for a slow drift in a random direction.
    """

    shape: str
    color: str
    frames: tuple[int, ...]
    direction: str | None = None


@dataclass
class SceneObject:
    """One object. `positions` (T, 2) int: top-left (y, x) of its sprite per frame; `visible` (T,) bool.

    The sprite is `size` pixels plus `outline` pixels of rim on each side. `role` is "target",
    "decoy", "salient" or "distractor".
    """

    role: str
    shape: str
    color: str
    size: int
    positions: np.ndarray
    visible: np.ndarray
    outline: int = 0
    brightness: float = 1.0
    # The axis-aligned direction of a `motion` target ("left", …); None for drifting objects.
    direction: str | None = None

    @property
    def extent(self) -> int:
        return self.size + 2 * self.outline

    @property
    def is_target(self) -> bool:
        return self.role == "target"

    def describe(self) -> dict:
        """JSON-friendly summary for item metadata."""
        return {
            "role": self.role,
            "shape": self.shape,
            "color": self.color,
            "size": int(self.size),
            "frames": [int(t) for t in np.flatnonzero(self.visible)],
            "direction": self.direction,
        }


@dataclass
class Scene:
    """Background (H, W, 3) uint8 and objects in drawing order (targets last, i.e. on top)."""

    background: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)

    @property
    def targets(self) -> list[SceneObject]:
        return [o for o in self.objects if o.is_target]


def _background(rng: np.random.Generator, cfg: WorldConfig) -> np.ndarray:
    """Low-contrast texture: a grey with a slight tint, a smooth random gradient and fine noise."""
    size = cfg.frame_size
    base = rng.uniform(95.0, 125.0) + rng.uniform(-8.0, 8.0, size=3)
    coarse = rng.normal(0.0, 10.0, size=(4, 4, 3))
    # Bilinear upsampling of the 4x4 grid to the frame, as two interpolation matrices.
    pos = (np.arange(size) + 0.5) / size * 3.0
    lo = np.clip(np.floor(pos).astype(int), 0, 2)
    frac = pos - lo
    interp = np.zeros((size, 4))
    interp[np.arange(size), lo] = 1.0 - frac
    interp[np.arange(size), lo + 1] = frac
    smooth = np.stack([interp @ coarse[:, :, c] @ interp.T for c in range(3)], axis=-1)
    fine = rng.normal(0.0, 3.0, size=(size, size, 1))
    return np.clip(np.rint(base + smooth + fine), 40, 170).astype(np.uint8)


def _bouncing_path(
    rng: np.random.Generator, frames: int, limit: int, speed: tuple[float, float]
) -> np.ndarray:
    """(T, 2) int top-left positions of an object moving at constant speed, bouncing off the borders."""
    start = rng.uniform(0.0, limit, size=2)
    angle = rng.uniform(0.0, 2 * np.pi)
    vel = rng.uniform(*speed) * np.array([np.sin(angle), np.cos(angle)])
    free = start[None, :] + np.arange(frames)[:, None] * vel[None, :]
    if limit <= 0:
        return np.zeros((frames, 2), dtype=np.int64)
    # Reflecting walls at 0 and `limit` fold the free path into a triangle wave of period 2*limit.
    folded = np.mod(free, 2 * limit)
    folded = np.where(folded > limit, 2 * limit - folded, folded)
    return np.clip(np.rint(folded), 0, limit).astype(np.int64)


def _distractors(
    rng: np.random.Generator,
    cfg: WorldConfig,
    shapes: list[str],
    colors: list[str],
    cover_colors: bool = False,
    forbidden_pairs: frozenset[tuple[str, str]] = frozenset(),
) -> list[SceneObject]:
    s = float(cfg.distractor_salience)
    t_lo, t_hi = cfg.target_size
    cap = max(t_hi, int(cfg.frame_size * 0.4))
    # Ordinary distractors span the target range and beyond on both sides.
    ord_lo, ord_hi = max(6, t_lo - 5), min(cap, t_hi + 10)
    # Salient ones grow with salience from target-like to large.
    sal_lo = min(cap, round((1 - s) * t_lo + s * max(t_hi + 8, 0.26 * cfg.frame_size)))
    sal_hi = min(cap, max(sal_lo, round((1 - s) * t_hi + s * 0.4 * cfg.frame_size)))
    outline = round(3 * s * cfg.frame_size / 112)
    salient_brightness = ORDINARY_BRIGHTNESS + (1 - ORDINARY_BRIGHTNESS) * s
    objects = []
    # With decoys the objects that stay in view take the colours in turn (a random order), so every
    # colour a question can name also shows on an object that never carries the answer.
    cycle = [str(c) for c in rng.permutation(colors)] if cover_colors else []
    for k in range(cfg.num_distractors):
        salient = k < cfg.num_salient
        size = int(rng.integers(sal_lo, sal_hi + 1) if salient else rng.integers(ord_lo, ord_hi + 1))
        shape = str(rng.choice(shapes))
        color = cycle[k % len(cycle)] if cover_colors else str(rng.choice(colors))
        while (shape, color) in forbidden_pairs:
            shape = str(rng.choice(shapes))
        obj = SceneObject(
            role="salient" if salient else "distractor",
            shape=shape,
            color=color,
            size=size,
            positions=np.zeros((cfg.frames, 2), dtype=np.int64),
            visible=np.ones(cfg.frames, dtype=bool),
            outline=outline if salient else 0,
            brightness=salient_brightness if salient else ORDINARY_BRIGHTNESS,
        )
        speed = (0.3, 1.5) if salient else (0.5, 2.5)
        obj.positions = _bouncing_path(rng, cfg.frames, cfg.frame_size - obj.extent, speed)
        objects.append(obj)
    return objects


def _overlap_cost(
    candidates: np.ndarray, extent: int, others: list[SceneObject], frames: np.ndarray
) -> np.ndarray:
    """Total box overlap (pixels, 1 px margin) of each candidate path (K, T, 2) with `others` in `frames`."""
    if not others:
        return np.zeros(candidates.shape[0])
    cand = candidates[:, None, frames]  # (K, 1, F, 2)
    other_pos = np.stack([o.positions[frames] for o in others])[None]  # (1, D, F, 2)
    other_ext = np.array([o.extent for o in others])[None, :, None, None]
    lo = np.maximum(cand - 1, other_pos)
    hi = np.minimum(cand + extent + 1, other_pos + other_ext)
    side = np.clip(hi - lo, 0, None)
    return (side[..., 0] * side[..., 1]).sum(axis=(1, 2))


def _target(
    rng: np.random.Generator,
    cfg: WorldConfig,
    spec: TargetSpec,
    others: list[SceneObject],
    role: str = "target",
) -> SceneObject:
    size = int(rng.integers(cfg.target_size[0], cfg.target_size[1] + 1))
    limit = cfg.frame_size - size
    first, last = spec.frames[0], spec.frames[-1]
    span = max(1, last - first)
    if spec.direction is not None:
        step = np.array(DIRECTIONS[spec.direction], dtype=float)
        # At least half a token cell per frame, so that between its first and last frame the target
        # changes token cells (at 3-5 px/frame, the first design, a 2-frame move often stayed inside
        # one 16 px cell and was invisible at token level).
        cell = cfg.frame_size / cfg.token_grid
        speed = min(rng.uniform(0.5 * cell, 0.75 * cell), limit / span)
        if speed < 1.0:
            raise ValueError(
                f"frame_size={cfg.frame_size} is too small for a target of {size} px to move "
                f"over {span} frames"
            )
    else:
        angle = rng.uniform(0.0, 2 * np.pi)
        step = np.array([np.sin(angle), np.cos(angle)])
        speed = min(rng.uniform(0.5, 2.5), limit / span)
    vel = speed * step
    travel = vel * (last - first)
    # Candidate start positions keep the whole path inside the frame; the first one that overlaps
    # no distractor wins, else the one overlapping least.
    start_lo = np.maximum(0.0, -travel)
    start_hi = np.minimum(limit, limit - travel)
    starts = rng.uniform(start_lo, start_hi, size=(_PLACEMENT_TRIES, 2))
    paths = starts[:, None, :] + (np.arange(cfg.frames) - first)[None, :, None] * vel[None, None, :]
    candidates = np.clip(np.rint(paths), 0, limit).astype(np.int64)
    visible = np.zeros(cfg.frames, dtype=bool)
    visible[list(spec.frames)] = True
    cost = _overlap_cost(candidates, size, others, np.flatnonzero(visible))
    free = np.flatnonzero(cost == 0)
    choice = int(free[0]) if free.size else int(cost.argmin())
    return SceneObject(
        role=role,
        shape=spec.shape,
        color=spec.color,
        size=size,
        positions=candidates[choice],
        visible=visible,
        brightness=ORDINARY_BRIGHTNESS,
        direction=spec.direction,
    )


def sample_scene(
    rng: np.random.Generator,
    cfg: WorldConfig,
    targets: list[TargetSpec],
    *,
    forbidden_shapes: set[str] | frozenset[str] = frozenset(),
    forbidden_colors: set[str] | frozenset[str] = frozenset(),
    decoys: list[TargetSpec] | tuple[TargetSpec, ...] = (),
) -> Scene:
    """Sample a scene holding `targets` and `decoys`; distractors avoid the forbidden shapes and colours.

    The forbidden sets keep a question's key attribute unique (no distractor triangle when the
    question says "the triangle"). Draw order: salient distractors, ordinary ones, decoys (each
    placed to avoid the objects before it), then targets (avoiding all of them).
    """
    shapes = [s for s in SHAPE_NAMES if s not in forbidden_shapes]
    colors = [c for c in COLOR_NAMES if c not in forbidden_colors]
    if cfg.num_distractors and (not shapes or not colors):
        raise ValueError("no shape or colour left for distractors after the uniqueness constraints")
    scene = Scene(background=_background(rng, cfg))
    # With decoys, a distractor may share a target's or decoy's colour or shape but not both ("the red
    # square" stays one object, for the question and for its counterfactual).
    pairs = frozenset((t.shape, t.color) for t in [*targets, *decoys]) if decoys else frozenset()
    scene.objects.extend(
        _distractors(rng, cfg, shapes, colors, cover_colors=bool(decoys), forbidden_pairs=pairs)
    )
    for spec in decoys:
        scene.objects.append(_target(rng, cfg, spec, list(scene.objects), role="decoy"))
    others = list(scene.objects)
    for spec in targets:
        scene.objects.append(_target(rng, cfg, spec, others))
    return scene
