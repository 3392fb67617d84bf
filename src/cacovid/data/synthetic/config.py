"""The synthetic world's knobs, and the one parser for `--world KEY=VALUE,...` strings.

Every command that uses the world takes the same override string, so parsing and validation live
here: a typo in a key or a value that would make the world impossible to generate fails at once with
a message that names it, instead of deep inside scene sampling.

Override syntax: `KEY=VALUE` pairs separated by commas. Tuple values (ranges, family lists) separate
their parts with a colon: `frames=8,target_size=14:20,families=color:shape`. A one-part range such
as `target_frames=3` means "exactly 3" (the same as `3:3`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "DECOY_FAMILIES",
    "DEFAULT_PRESET",
    "DEFAULT_WORLD",
    "EVIDENCE_MIN_FRACTION",
    "FAMILIES",
    "MAX_FRAMES",
    "PRESETS",
    "SPLIT_STRIDE",
    "WorldConfig",
    "parse_world_overrides",
    "world_from_overrides",
]

FAMILIES: tuple[str, ...] = ("color", "shape", "motion", "order", "count")
# Families that can be asked in a world with decoys. `motion` ("which way does the red square
# move ?") names its target by colour, which the embedded model reads reliably; with decoys every
# object that comes and goes has a colour of its own while the objects that stay in view show every
# colour, so the named colour does not make the target stand out: only colour *and* coming and going
# together find it. The other families name their target by shape (read poorly at 16 px) or ask
# about several objects at once.
DECOY_FAMILIES: tuple[str, ...] = ("motion",)
# The default leaves out two families the embedded from-scratch toy model does not learn (measured;
# see README "The embedded toy model"), so that its compression results mean something:
# - `shape` (identity: "which shape is red ?") needs shape recognition at 16 px: ~15 % per token;
# - `count` ("in how many frames …") stayed at 30-37 % (chance 25 %) after every training signal we
#   added: a target covers 1-4 token cells per frame, so counting frames is not counting tokens, and
#   the running count a target token should carry was right only 25 % of the time at its last frame.
# Both stay one flag away: `--world preset=classic,families=color:shape:motion:order:count`.
DEFAULT_FAMILIES: tuple[str, ...] = ("color", "motion", "order")
MAX_FRAMES = 64
# Named worlds (`--world preset=NAME`; other keys override the preset's values):
# - classic: one object comes and goes, the others stay in view; a question-blind "what is new in
#   this frame" signal finds the evidence.
# - decoys: seven more objects come and go like the target (same sizes, durations, fast axis-aligned
#   motion), each in a colour of its own, while the objects that stay in view show every colour;
#   only the question tells which one matters. Objects are larger and stay longer than in `classic`
#   so that what comes and goes is about 2.4x the 10 % token budget and 4.7x the 5 % one.
PRESETS: dict[str, dict[str, Any]] = {
    "classic": {},
    "decoys": {
        "families": ("motion",),
        "num_decoys": 7,
        "num_distractors": 8,
        "target_size": (20, 28),
        "target_frames": (6, 10),
    },
}
# The world a command line's `--world` starts from: `decoys`, where only the question tells which of
# the objects that come and go matters, which is what a question-aware token selector is for (on
# `classic` a question-blind novelty signal already finds the evidence). `WorldConfig()` itself stays
# the classic world, so the Python API, saved configs and `preset=classic` keep their items.
DEFAULT_PRESET = "decoys"
DEFAULT_WORLD = f"preset={DEFAULT_PRESET}"
# Decoys and the target each have a colour of their own, out of the palette's 8.
MAX_DECOYS = 7
# Item seeds of different splits lie this far apart, so `seed_offset + index` must stay below it.
SPLIT_STRIDE = 10**9
# A token cell holds an object when at least this fraction of its pixels are that object's pixels.
EVIDENCE_MIN_FRACTION = 0.10


def parse_world_overrides(text: str | None) -> dict[str, str]:
    """'frames=8,target_size=14:20' -> {'frames': '8', 'target_size': '14:20'}.

    Only splits the text; `WorldConfig.with_overrides` checks keys and values. Empty text gives {}.
    """
    if text is None or not text.strip():
        return {}
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty entry in world overrides {text!r} (stray comma?)")
        if "=" not in part:
            raise ValueError(f"world override {part!r} must look like KEY=VALUE")
        key, value = (s.strip() for s in part.split("=", 1))
        if not key:
            raise ValueError(f"world override {part!r} has an empty key")
        if key in out:
            raise ValueError(f"world override key {key!r} given twice")
        out[key] = value
    return out


def _int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"world override {key}={text!r}: expected an integer") from None


def _float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"world override {key}={text!r}: expected a number") from None
    if not math.isfinite(value):
        raise ValueError(f"world override {key}={text!r}: expected a finite number")
    return value


def _int_range(key: str, text: str) -> tuple[int, int]:
    parts = text.split(":")
    if len(parts) == 1:
        value = _int(key, parts[0])
        return (value, value)
    if len(parts) != 2:
        raise ValueError(f"world override {key}={text!r}: expected LOW:HIGH, e.g. 12:18")
    return (_int(key, parts[0]), _int(key, parts[1]))


def _names(key: str, text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(":"))
    if not all(names):
        raise ValueError(f"world override {key}={text!r}: expected names separated by ':'")
    return names


@dataclass(frozen=True)
class WorldConfig:
    """How the synthetic sparse-evidence world is generated (see `data/synthetic/__init__.py`).

    - `frames`, `frame_size`: video length and square frame side in pixels.
    - `token_grid`: token cells per side; each cell is `frame_size // token_grid` pixels square,
      matching the toy model's video tokens (default 7x7 cells of 16x16 px, 784 tokens).
    - `num_distractors`, `num_salient`: objects present in every frame; `num_salient` of them are
      large, bright and outlined, with `distractor_salience` in [0, 1] scaling how much.
    - `target_size`: (low, high) side of a target's bounding box in pixels.
    - `target_frames`: (low, high) number of frames a target is visible in (the `count` family
      extends the high end to low + 3 so its four consecutive options are all possible answers).
    - `num_decoys`: objects that come and go like a target (sizes from `target_size`, visible for
      `target_frames` consecutive frames, moving fast along an axis), each in a colour no other
      such object has, but never the answer; the objects that stay in view then take the palette's
      colours in turn, so every colour also appears on one of them. Only families of
      `DECOY_FAMILIES` can be asked with decoys.
    - `seed_offset`: shifts every item seed, giving a fresh world with the same statistics.
    - `families`: the question families generated, assigned round-robin by item index.
    - `answer_format`: "option" (answer with the option text, what the embedded toy model was
      trained on: it removes the option-letter lookup that a from-scratch model learns slowly) or
      "letter" (the usual benchmark instruction).
    """

    frames: int = 16
    frame_size: int = 112
    token_grid: int = 7
    num_distractors: int = 5
    distractor_salience: float = 1.0
    num_salient: int = 2
    target_size: tuple[int, int] = (14, 20)
    target_frames: tuple[int, int] = (3, 5)
    seed_offset: int = 0
    num_decoys: int = 0
    families: tuple[str, ...] = field(default=DEFAULT_FAMILIES)
    answer_format: str = "option"

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "target_size", tuple(self.target_size))
        object.__setattr__(self, "target_frames", tuple(self.target_frames))
        object.__setattr__(self, "families", tuple(self.families))
        self._validate()

    # ---- validation ---------------------------------------------------------------------------
    def _validate(self) -> None:
        for name in (
            "frames",
            "frame_size",
            "token_grid",
            "num_distractors",
            "num_salient",
            "seed_offset",
            "num_decoys",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"world config {name} must be an integer, got {value!r}")
        if not 2 <= self.frames <= MAX_FRAMES:
            raise ValueError(f"world config frames must be in [2, {MAX_FRAMES}], got {self.frames}")
        if self.token_grid < 1:
            raise ValueError(f"world config token_grid must be >= 1, got {self.token_grid}")
        if not 8 <= self.frame_size <= 1024 or self.frame_size % self.token_grid:
            raise ValueError(
                f"world config frame_size must be in [8, 1024] and divisible by token_grid="
                f"{self.token_grid}, got {self.frame_size}"
            )
        if not 0 <= self.num_distractors <= 32:
            raise ValueError(f"world config num_distractors must be in [0, 32], got {self.num_distractors}")
        if not 0 <= self.num_decoys <= MAX_DECOYS:
            raise ValueError(
                f"world config num_decoys must be in [0, {MAX_DECOYS}] (every object that comes and "
                f"goes has a colour of its own), got {self.num_decoys}"
            )
        if self.num_decoys:
            wrong = [f for f in self.families if f not in DECOY_FAMILIES]
            if wrong:
                raise ValueError(
                    f"world config families {wrong} cannot be asked with decoys (num_decoys="
                    f"{self.num_decoys}): they name the target by an attribute decoys would share; "
                    f"families for a world with decoys: {DECOY_FAMILIES}"
                )
        if not 0 <= self.num_salient <= self.num_distractors:
            raise ValueError(
                f"world config num_salient must be in [0, num_distractors={self.num_distractors}], "
                f"got {self.num_salient}"
            )
        if not isinstance(self.distractor_salience, (int, float)) or not (
            0.0 <= self.distractor_salience <= 1.0
        ):
            raise ValueError(
                f"world config distractor_salience must be in [0, 1], got {self.distractor_salience!r}"
            )
        lo, hi = self._pair("target_size")
        if not 4 <= lo <= hi <= self.frame_size // 2:
            raise ValueError(
                f"world config target_size must satisfy 4 <= low <= high <= frame_size/2="
                f"{self.frame_size // 2}, got {self.target_size}"
            )
        lo, hi = self._pair("target_frames")
        if not 1 <= lo <= hi <= self.frames:
            raise ValueError(
                f"world config target_frames must satisfy 1 <= low <= high <= frames={self.frames}, "
                f"got {self.target_frames}"
            )
        if not 0 <= self.seed_offset < SPLIT_STRIDE:
            raise ValueError(
                f"world config seed_offset must be in [0, {SPLIT_STRIDE}), got {self.seed_offset}"
            )
        if not self.families:
            raise ValueError("world config families must name at least one family")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"world config families: unknown {unknown}, known families are {FAMILIES}")
        if self.answer_format not in ("letter", "option"):
            raise ValueError(
                f"world config answer_format must be 'letter' or 'option', got {self.answer_format!r}"
            )
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"world config families lists a family twice: {self.families}")
        if "count" in self.families and self.count_range[1] > self.frames:
            raise ValueError(
                f"the count family needs frames >= target_frames low + 3 = {self.count_range[1]}, "
                f"got frames={self.frames}"
            )
        if "order" in self.families and 2 * self.target_frames[0] > self.frames:
            raise ValueError(
                f"the order family needs frames >= 2 * target_frames low = {2 * self.target_frames[0]}, "
                f"got frames={self.frames}"
            )
        if "motion" in self.families and self.target_frames[1] < 2:
            raise ValueError("the motion family needs target_frames high >= 2 (motion must be visible)")

    def _pair(self, name: str) -> tuple[int, int]:
        value = getattr(self, name)
        if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"world config {name} must be a pair of integers, got {value!r}")
        return value

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def cell_size(self) -> int:
        """Side of one token cell in pixels."""
        return self.frame_size // self.token_grid

    @property
    def tokens_per_frame(self) -> int:
        return self.token_grid * self.token_grid

    @property
    def num_tokens(self) -> int:
        return self.frames * self.tokens_per_frame

    @property
    def evidence_min_pixels(self) -> int:
        """Pixels of an object a cell needs to count as holding it (EVIDENCE_MIN_FRACTION of a cell)."""
        return max(1, math.ceil(EVIDENCE_MIN_FRACTION * self.cell_size * self.cell_size - 1e-9))

    @property
    def count_range(self) -> tuple[int, int]:
        """Possible answers of the `count` family: at least four consecutive values."""
        lo, hi = self.target_frames
        return (lo, max(hi, lo + 3))

    # ---- overrides and serialisation ----------------------------------------------------------
    def with_overrides(self, overrides: dict[str, str] | str | None) -> WorldConfig:
        """A copy with CLI-style string values applied (see the module docstring for the syntax).

        Raises ValueError naming an unknown key or a value that does not parse or validate.
        """
        if overrides is None:
            return self
        if isinstance(overrides, str):
            overrides = parse_world_overrides(overrides)
        base = self
        if "preset" in overrides:
            overrides = dict(overrides)
            base = WorldConfig.preset(str(overrides.pop("preset")).strip())
        known = {f.name for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, text in overrides.items():
            if key not in known:
                raise ValueError(
                    f"unknown world config key {key!r}; known keys: {sorted(known | {'preset'})}"
                )
            text = str(text).strip()
            if key == "distractor_salience":
                changes[key] = _float(key, text)
            elif key in ("target_size", "target_frames"):
                changes[key] = _int_range(key, text)
            elif key == "families":
                changes[key] = _names(key, text)
            elif key == "answer_format":
                changes[key] = text
            else:
                changes[key] = _int(key, text)
        try:
            return dataclasses.replace(base, **changes)
        except ValueError as err:
            if base is self:
                raise
            raise ValueError(f"{err} (with the world preset's values: {base.preset_name})") from None

    @classmethod
    def preset(cls, name: str) -> WorldConfig:
        """The named world of `PRESETS` ("classic": the default config; "decoys": see PRESETS)."""
        if name not in PRESETS:
            raise ValueError(f"unknown world preset {name!r}; known presets: {sorted(PRESETS)}")
        return cls(**PRESETS[name])

    @property
    def preset_name(self) -> str | None:
        """The preset this config equals exactly, or None for a custom world."""
        for name in PRESETS:
            if WorldConfig.preset(name) == self:
                return name
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists), as stored in result files."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        """Inverse of `to_dict`; unknown keys are an error (they mean a different world)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown world config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)


def world_from_overrides(
    overrides: WorldConfig | dict[str, str] | str | None = None, default_preset: str = DEFAULT_PRESET
) -> WorldConfig:
    """The world a command line's `--world` text means.

    Keys without a `preset` change the default preset's values (`frames=8` on the command line is
    the decoys world with 8 frames); `preset=NAME` starts from that preset instead
    (`preset=classic,frames=8`). Empty text or None gives the default preset itself; a WorldConfig
    is returned as it is. One function for every command, so no command's default can drift from
    another's. Errors name the default preset, since a key that is fine on `classic` (e.g.
    `families=color`) may not be on it.
    """
    if isinstance(overrides, WorldConfig):
        return overrides
    if overrides is None or isinstance(overrides, str):
        parsed = parse_world_overrides(overrides)
    else:
        parsed = dict(overrides)
    if "preset" in parsed:
        return WorldConfig().with_overrides(parsed)
    base = WorldConfig.preset(default_preset)
    if not set(parsed) <= {f.name for f in fields(WorldConfig)}:
        return base.with_overrides(parsed)  # raises, naming the unknown key
    try:
        return base.with_overrides(parsed)
    except ValueError as err:
        hint = "" if default_preset == "classic" else "; start with preset=classic for the classic world"
        raise ValueError(
            f"{err} (keys without a preset change the default world, preset={default_preset}{hint})"
        ) from None
