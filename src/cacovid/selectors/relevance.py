"""Question relevance at the language model's input: keep the video tokens that look like the question.

Why it is here: CaCoVID's claim is that a *trained*, question-reading policy finds what contributes to
the answer. Recent training-free methods read the question too (cross-modal similarity between video
tokens and the question's token embeddings, often combined with a temporal-redundancy signal, as in
EchoPrune), so the trained policy has to beat a question-aware heuristic, not only question-blind
ones. Two selectors:

- `relevance`: r_i = max over question tokens j of (cos(x_i, q_j) − mean over video tokens i' of
  cos(x_i', q_j)). Centring each text token's similarities on the video's mean removes the words that
  resemble every video token alike (template words, special tokens), so only tokens that stand out for
  some word of the question score high. The question tokens are the text tokens after the video block
  (question, options and answer instruction), which is where every supported chat template puts them.
- `relevance_novelty`: z(r) + w·z(temporal novelty) (`ops/novelty.py`; z = standardised over the
  video, w = `novelty_weight`, 1 by default): what the question names *and* what other frames lack.

Both are pure pruning; ties go to the lower index; no randomness.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cacovid.ops.novelty import standardise, temporal_novelty
from cacovid.ops.topk import topk_rows_mask
from cacovid.selectors.base import BaseSelector, SelectResult, unit
from cacovid.types import EncodedPrompt


def question_relevance(prompt: EncodedPrompt) -> Tensor:
    """(N,) centred max cosine similarity of each video token to the question's token embeddings."""
    video = unit(prompt.video_features)  # (N, D)
    text = unit(prompt.inputs_embeds[prompt.question_positions()])  # (Q, D)
    sim = video @ text.T  # (N, Q)
    return (sim - sim.mean(dim=0, keepdim=True)).amax(dim=1)


def _top_k(score: Tensor, k: int) -> Tensor:
    return topk_rows_mask(score.unsqueeze(0), k)[0]


class RelevanceSelector(BaseSelector):
    """Keep the K video tokens most similar to some word of the question (centred, see above)."""

    name = "relevance"

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        return _top_k(question_relevance(prompt), k), None, {}


class RelevanceNoveltySelector(BaseSelector):
    """Keep the K video tokens with the highest z(question relevance) + w·z(temporal novelty)."""

    name = "relevance_novelty"

    def __init__(self, novelty_weight: float = 1.0) -> None:
        weight = float(novelty_weight)
        if not weight >= 0.0 or weight == float("inf"):
            raise ValueError(f"novelty_weight must be a finite number >= 0, got {novelty_weight!r}")
        self.novelty_weight = weight

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        relevance = standardise(question_relevance(prompt))
        novelty = standardise(temporal_novelty(prompt.frame_features()).reshape(-1))
        return _top_k(relevance + self.novelty_weight * novelty.to(relevance.device), k), None, {}
