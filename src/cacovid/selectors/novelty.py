"""Temporal-novelty ranking: keep the tokens whose content the other frames lack (`ops/novelty.py`).

Why it is here: CaCoVID's policy can take this score as a prior (`PolicyConfig.novelty_weight`), so
the prior alone must be a baseline of its own; otherwise a gain of the primed policy could not be told
apart from the prior's. It is question-agnostic and training-free: the video's K most novel tokens,
compared position-free with every token of every other frame (moving objects that stay in view count
as persistent, unlike DyCoke's same-location comparison). Ties go to the lower index. Pure pruning.
"""

from __future__ import annotations

import torch

from cacovid.ops.novelty import temporal_novelty
from cacovid.selectors.base import BaseSelector, SelectResult
from cacovid.types import EncodedPrompt


class NoveltySelector(BaseSelector):
    """Keep the K tokens least repeated in the video's other frames."""

    name = "novelty"

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        novelty = temporal_novelty(prompt.frame_features()).reshape(-1)
        order = torch.sort(novelty, descending=True, stable=True).indices
        keep = torch.zeros(novelty.numel(), dtype=torch.bool, device=novelty.device)
        keep[order[:k]] = True
        return keep, None, {}
