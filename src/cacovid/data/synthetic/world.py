"""`SyntheticWorld`: deterministic items of the sparse-evidence video-QA world.

Item `index` of a split is generated from its own seed, `split_base + seed_offset + index` (train from
0, val from 1e9, test from 2e9), so it never depends on which items were generated before it and the
splits never share a scene. The family is assigned round-robin by index, so any run of
`len(families)` consecutive items holds each family once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cacovid.data.synthetic.config import SPLIT_STRIDE, WorldConfig
from cacovid.data.synthetic.questions import ask, ask_counterfactual, plan
from cacovid.data.synthetic.render import Rendered, render_scene
from cacovid.data.synthetic.scene import Scene, sample_scene
from cacovid.types import QAItem

__all__ = ["SPLITS", "SyntheticWorld", "WorldSample"]

SPLITS: dict[str, int] = {"train": 0, "val": SPLIT_STRIDE, "test": 2 * SPLIT_STRIDE}


@dataclass
class WorldSample:
    """An item together with the scene and rendering it came from (for checks and visualisation)."""

    item: QAItem
    scene: Scene
    rendered: Rendered


class SyntheticWorld:
    """Generates `QAItem`s on the fly from a `WorldConfig` (defaults if None)."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config if config is not None else WorldConfig()

    def __repr__(self) -> str:
        return f"SyntheticWorld({self.config!r})"

    def seed(self, split: str, index: int) -> int:
        """The seed of item `index` of `split`."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"item index must be a non-negative integer, got {index!r}")
        if self.config.seed_offset + int(index) >= SPLIT_STRIDE:
            raise ValueError(
                f"seed_offset + index must stay below {SPLIT_STRIDE} so splits stay disjoint, "
                f"got {self.config.seed_offset} + {index}"
            )
        return SPLITS[split] + self.config.seed_offset + int(index)

    def family(self, index: int) -> str:
        families = self.config.families
        return families[int(index) % len(families)]

    def sample(self, split: str, index: int) -> WorldSample:
        """Generate item `index` of `split` with its scene and rendering."""
        seed = self.seed(split, index)
        cfg = self.config
        family = self.family(index)
        rng = np.random.default_rng(seed)
        p = plan(family, rng, cfg)
        scene = sample_scene(
            rng,
            cfg,
            p.targets,
            forbidden_shapes=p.forbidden_shapes,
            forbidden_colors=p.forbidden_colors,
            decoys=p.decoys,
        )
        rendered = render_scene(scene, cfg)
        problem, options, letter = ask(p, rng, scene)
        counterfactual = ask_counterfactual(p, rng)
        meta = {
            "answer": p.answer,
            "seed": seed,
            "split": split,
            "index": int(index),
            "token_color": rendered.token_color,
            "token_shape": rendered.token_shape,
            "token_is_target": rendered.evidence.copy(),
            "token_object": rendered.token_object,
            "objects": [o.describe() for o in scene.objects],
            "target_frames": [[int(t) for t in spec.frames] for spec in p.targets],
        }
        item = QAItem(
            id=f"synthetic:{split}:{int(index)}",
            problem=problem,
            options=options,
            solution=letter,
            problem_type="multiple choice",
            family=family,
            frames=rendered.frames,
            evidence=rendered.evidence,
            meta=meta,
            answer_format=cfg.answer_format,
        )
        if counterfactual is not None:
            # Decoys are drawn right after the distractors, in plan order.
            index = cfg.num_distractors + counterfactual.decoy
            item.counterfactual = QAItem(
                id=f"{item.id}:counterfactual",
                problem=counterfactual.problem,
                options=counterfactual.options,
                solution=counterfactual.solution,
                problem_type="multiple choice",
                family=family,
                frames=rendered.frames,
                evidence=rendered.present[..., index].copy(),
                meta={**meta, "answer": counterfactual.answer, "counterfactual_of": item.id},
                answer_format=cfg.answer_format,
            )
            meta["counterfactual_object"] = index + 1  # as in token_object
        return WorldSample(item=item, scene=scene, rendered=rendered)

    def item(self, split: str, index: int) -> QAItem:
        """Item `index` of `split`: frames (T, H, W, 3) uint8, evidence (T, g, g) bool, labels in meta."""
        return self.sample(split, index).item

    def items(self, split: str, n: int, start: int = 0) -> Iterator[QAItem]:
        """Items start, start+1, …, start+n-1 of `split`, generated lazily."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"number of items must be a non-negative integer, got {n!r}")
        self.seed(split, start)  # validate split and start now, not at the first next()
        return (self.item(split, index) for index in range(int(start), int(start) + int(n)))
