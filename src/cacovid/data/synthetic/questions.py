"""The five question families: what each asks, which scene it needs, and its four options.

Each family has two halves: `plan` draws the answer and the target(s) (with the uniqueness
constraints the question needs), and `ask` writes the question and the three wrong options once the
scene exists. Guarding against blind shortcuts:

- every answer value is drawn uniformly (each colour / shape / direction equally often), and the
  wrong options are drawn so that the whole generator is symmetric under relabelling colours or
  shapes: given only the text, each option is equally likely to be right;
- `count` options are four consecutive numbers with the answer uniform among them;
- options are shuffled per item, so the correct letter is uniform over A-D.

Wrong options prefer values that do occur in the video (colours / shapes of distractors), so finding
"the option that appears at all" does not answer the question; `order` is the exception by design:
two of its options are colours absent from the video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cacovid.data.synthetic.config import MAX_FRAMES, WorldConfig
from cacovid.data.synthetic.palette import COLOR_NAMES, SHAPE_NAMES
from cacovid.data.synthetic.scene import DIRECTIONS, Scene, TargetSpec

__all__ = [
    "LETTERS",
    "TEMPLATES",
    "VOCABULARY",
    "Counterfactual",
    "Plan",
    "ask",
    "ask_counterfactual",
    "plan",
]

LETTERS = "ABCD"
TEMPLATES: dict[str, str] = {
    "color": "what color is the {shape} ?",
    "shape": "which shape is {color} ?",
    "motion": "which way does the {color} {shape} move ?",
    "order": "which of these appears first ?",
    "count": "in how many frames does the {color} {shape} appear ?",
}


def _vocabulary() -> list[str]:
    words: set[str] = set()
    for template in TEMPLATES.values():
        words.update(w for w in template.split() if not w.startswith("{"))
    words.update(COLOR_NAMES, SHAPE_NAMES, DIRECTIONS)
    words.update(str(k) for k in range(MAX_FRAMES + 1))
    words.update(LETTERS)
    words.update(["?", "."])
    # The words QAItem.prompt_text adds around the question ("A . red ... answer with the letter .").
    words.update(["answer", "with", "the", "letter", "option"])
    return sorted(words)


# Every word a question, option, answer or QAItem.prompt_text of this world can contain.
VOCABULARY: list[str] = _vocabulary()


@dataclass
class Plan:
    """A family's draw before the scene exists: answer value, targets, and distractor constraints."""

    family: str
    answer: str
    targets: list[TargetSpec]
    forbidden_shapes: set[str] = field(default_factory=set)
    forbidden_colors: set[str] = field(default_factory=set)
    # Values fixed at plan time that `ask` needs (e.g. the absent shapes of `order`).
    extra: dict = field(default_factory=dict)
    # Objects that come and go like the target but never carry the answer (worlds with decoys).
    decoys: list[TargetSpec] = field(default_factory=list)


def _with_decoys(p: Plan, rng: np.random.Generator, cfg: WorldConfig) -> Plan:
    """Add `cfg.num_decoys` decoys to a `motion` plan: each a colour of its own, any shape and way.

    The question names the target's colour and shape; no decoy has its colour, so the question
    stays well posed, while distractors may now share the colour (or the shape, not both).
    """
    lo, hi = cfg.target_frames
    colors = [str(c) for c in rng.permutation([c for c in COLOR_NAMES if c != p.extra["color"]])]
    p.decoys = [
        TargetSpec(
            _pick(rng, SHAPE_NAMES),
            color,
            _window(rng, cfg.frames, _length(rng, max(lo, 2), hi)),
            _pick(rng, tuple(DIRECTIONS)),
        )
        for color in colors[: cfg.num_decoys]
    ]
    p.forbidden_shapes, p.forbidden_colors = set(), set()
    return p


def _window(rng: np.random.Generator, frames: int, length: int) -> tuple[int, ...]:
    start = int(rng.integers(0, frames - length + 1))
    return tuple(range(start, start + length))


def _length(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def _pick(rng: np.random.Generator, values: list[str] | tuple[str, ...]) -> str:
    return str(values[int(rng.integers(len(values)))])


def plan(family: str, rng: np.random.Generator, cfg: WorldConfig) -> Plan:
    """Draw the answer and target(s) of one item of `family`."""
    lo, hi = cfg.target_frames
    T = cfg.frames
    if family == "color":
        shape, color = _pick(rng, SHAPE_NAMES), _pick(rng, COLOR_NAMES)
        spec = TargetSpec(shape, color, _window(rng, T, _length(rng, lo, hi)))
        return Plan(family, color, [spec], forbidden_shapes={shape}, extra={"shape": shape})
    if family == "shape":
        shape, color = _pick(rng, SHAPE_NAMES), _pick(rng, COLOR_NAMES)
        spec = TargetSpec(shape, color, _window(rng, T, _length(rng, lo, hi)))
        return Plan(family, shape, [spec], forbidden_colors={color}, extra={"color": color})
    if family == "motion":
        shape, color = _pick(rng, SHAPE_NAMES), _pick(rng, COLOR_NAMES)
        direction = _pick(rng, tuple(DIRECTIONS))
        spec = TargetSpec(shape, color, _window(rng, T, _length(rng, max(lo, 2), hi)), direction)
        p = Plan(
            family,
            direction,
            [spec],
            forbidden_shapes={shape},
            forbidden_colors={color},
            extra={"shape": shape, "color": color},
        )
        return _with_decoys(p, rng, cfg) if cfg.num_decoys else p
    if family == "order":
        # Four distinct colours: first target, second target, and two colours absent from the video.
        # Colours, not shapes: a from-scratch toy model reads colour per token far more reliably than
        # shape at 16 px (see toy/losses.py, `aux_loss`), and the question stays about *when* things happen.
        first, second, *absent = (str(c) for c in rng.permutation(COLOR_NAMES)[:4])
        len1 = _length(rng, lo, min(hi, T - lo))
        len2 = _length(rng, lo, min(hi, T - len1))
        start1 = int(rng.integers(0, T - len1 - len2 + 1))
        start2 = int(rng.integers(start1 + len1, T - len2 + 1))
        specs = [
            TargetSpec(_pick(rng, SHAPE_NAMES), first, tuple(range(start1, start1 + len1))),
            TargetSpec(_pick(rng, SHAPE_NAMES), second, tuple(range(start2, start2 + len2))),
        ]
        forbidden = {first, second, *absent}
        return Plan(
            family, first, specs, forbidden_colors=forbidden, extra={"options": [first, second, *absent]}
        )
    if family == "count":
        shape, color = _pick(rng, SHAPE_NAMES), _pick(rng, COLOR_NAMES)
        c_lo, c_hi = cfg.count_range
        low = int(rng.integers(c_lo, c_hi - 3 + 1))
        count = low + int(rng.integers(4))
        frames = tuple(sorted(int(t) for t in rng.choice(T, size=count, replace=False)))
        spec = TargetSpec(shape, color, frames)
        options = [str(low + k) for k in range(4)]
        return Plan(
            family,
            str(count),
            [spec],
            forbidden_shapes={shape},
            forbidden_colors={color},
            extra={"shape": shape, "color": color, "options": options},
        )
    raise ValueError(f"unknown question family {family!r}")


def _wrong_options(
    rng: np.random.Generator, answer: str, seen: list[str], universe: tuple[str, ...]
) -> list[str]:
    """Three wrong values: distinct values seen in the video first (random order), then random others."""
    seen_unique = [v for v in dict.fromkeys(seen) if v != answer]
    wrong = [seen_unique[i] for i in rng.permutation(len(seen_unique))][:3]
    rest = [v for v in universe if v != answer and v not in wrong]
    wrong += [rest[i] for i in rng.permutation(len(rest))][: 3 - len(wrong)]
    return wrong


def ask(p: Plan, rng: np.random.Generator, scene: Scene) -> tuple[str, list[str], str]:
    """(problem, shuffled options, correct letter) for a planned item in its sampled scene."""
    distractors = [o for o in scene.objects if not o.is_target]
    if p.family == "color":
        problem = TEMPLATES["color"].format(shape=p.extra["shape"])
        values = [p.answer, *_wrong_options(rng, p.answer, [o.color for o in distractors], COLOR_NAMES)]
    elif p.family == "shape":
        problem = TEMPLATES["shape"].format(color=p.extra["color"])
        values = [p.answer, *_wrong_options(rng, p.answer, [o.shape for o in distractors], SHAPE_NAMES)]
    elif p.family == "motion":
        problem = TEMPLATES["motion"].format(color=p.extra["color"], shape=p.extra["shape"])
        values = list(DIRECTIONS)
    elif p.family == "order":
        problem = TEMPLATES["order"]
        values = list(p.extra["options"])
    elif p.family == "count":
        problem = TEMPLATES["count"].format(color=p.extra["color"], shape=p.extra["shape"])
        values = list(p.extra["options"])
    else:
        raise ValueError(f"unknown question family {p.family!r}")
    options = [values[i] for i in rng.permutation(len(values))]
    return problem, options, LETTERS[options.index(p.answer)]


@dataclass(frozen=True)
class Counterfactual:
    """A question about another object of the same video: problem, options, letter, which object."""

    problem: str
    options: list[str]
    solution: str
    answer: str
    decoy: int  # index into Plan.decoys


def ask_counterfactual(p: Plan, rng: np.random.Generator) -> Counterfactual | None:
    """The same family's question about the first decoy, or None where the world has no decoys.

    Asked of the same video, it names an object that comes and goes exactly like the target does, so
    a selector that reads the question must move its budget to that object; a question-blind one
    cannot. Drawn after the item's own question, so it changes nothing about the item.
    """
    if not p.decoys or p.family != "motion":
        return None
    decoy = p.decoys[0]
    problem = TEMPLATES["motion"].format(color=decoy.color, shape=decoy.shape)
    options = [str(v) for v in rng.permutation(list(DIRECTIONS))]
    answer = str(decoy.direction)
    return Counterfactual(problem, options, LETTERS[options.index(answer)], answer, 0)
