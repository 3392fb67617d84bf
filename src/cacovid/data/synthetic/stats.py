"""Statistics of a world sample: how sparse the evidence is and how balanced the answers are.

These are the numbers that say whether the benchmark is what it claims: evidence should be a few
percent of the video tokens, and neither the answer letter nor the answer value should be
predictable without looking.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from cacovid.data.synthetic.world import SyntheticWorld

__all__ = ["FamilyStats", "evidence_fraction_by_family", "world_stats"]


@dataclass
class FamilyStats:
    """Per-family summary over n items."""

    n: int = 0
    evidence_fraction: float = 0.0  # mean over items of (evidence tokens / all video tokens)
    # mean over items of (tokens where a decoy shows and no target does / all video tokens): content
    # that comes and goes like the evidence but does not answer the question
    decoy_fraction: float = 0.0
    letters: Counter = field(default_factory=Counter)  # correct letter -> count
    answers: Counter = field(default_factory=Counter)  # correct option value -> count

    @property
    def max_letter_share(self) -> float:
        """Share of the most frequent correct letter (0.25 is perfectly balanced over A-D)."""
        return max(self.letters.values()) / self.n if self.n else 0.0


def world_stats(world: SyntheticWorld, split: str, n: int, start: int = 0) -> dict[str, FamilyStats]:
    """Generate n items of `split` and summarise them per family (families in config order)."""
    fractions: dict[str, list[float]] = defaultdict(list)
    decoys: dict[str, list[float]] = defaultdict(list)
    out = {family: FamilyStats() for family in world.config.families}
    world.seed(split, start)  # validate split and start before generating anything
    for index in range(start, start + n):
        sample = world.sample(split, index)
        item = sample.item
        stats = out[item.family]
        stats.n += 1
        stats.letters[item.solution] += 1
        stats.answers[item.meta["answer"]] += 1
        fractions[item.family].append(float(np.mean(item.evidence)))
        is_decoy = np.array([o.role == "decoy" for o in sample.scene.objects], dtype=bool)
        decoy_cells = sample.rendered.present[..., is_decoy].any(axis=-1) & ~item.evidence
        decoys[item.family].append(float(np.mean(decoy_cells)))
    for family, values in fractions.items():
        out[family].evidence_fraction = float(np.mean(values))
        out[family].decoy_fraction = float(np.mean(decoys[family]))
    return {family: stats for family, stats in out.items() if stats.n}


def evidence_fraction_by_family(world: SyntheticWorld, split: str, n: int) -> dict[str, float]:
    """Mean fraction of video tokens that are evidence, per family, over n items of `split`."""
    return {family: s.evidence_fraction for family, s in world_stats(world, split, n).items()}
