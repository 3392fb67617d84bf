"""DyCoke-style temporal token pruning, pre-LLM stage only (Tao et al., "DyCoke: Dynamic Compression
of Tokens for Fast Video Large Language Models", CVPR 2025).

The paper's first stage (temporal token merging, TTM): frames are taken in small windows; within a
window, tokens of the later frames that are highly similar (cosine above a threshold) to the token
at the same spatial location in the window's pivot frame are redundant and removed, so static
content is kept once per window. (The paper's second stage, dynamic KV-cache pruning during
decoding, is not implemented.)

Here, with windows of `window` consecutive frames and the first frame of each window as its pivot:
redundancy of a non-pivot token = cos(token, same-location token of the pivot frame). To hit the
budget exactly, the threshold is replaced by a ranking: all pivot tokens are kept and the remaining
K − (#pivot tokens) slots go to the least redundant non-pivot tokens (ties: lower index). If the
budget is smaller than the pivot tokens alone, an even spread of the pivot tokens is kept.
`Selection.info["above_threshold"]` reports how many tokens DyCoke's own threshold rule would have
removed. Pure pruning. Parameters: `window` (4), `threshold` (0.9, for the report only).
"""

from __future__ import annotations

import torch

from cacovid.ops.fill import even_fill
from cacovid.selectors.base import BaseSelector, SelectResult, check_positive_int, unit
from cacovid.types import EncodedPrompt


class DyCokeSelector(BaseSelector):
    """Drop the non-pivot tokens most similar to their window pivot's same-location token."""

    name = "dycoke"

    def __init__(self, window: int = 4, threshold: float = 0.9) -> None:
        self.window = check_positive_int(window, "window")
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
        self.threshold = float(threshold)

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        xn = unit(prompt.frame_features())  # (T, P, D)
        T, P, _ = xn.shape
        dev = xn.device
        t = torch.arange(T, device=dev)
        pivot_of = t - t % self.window  # (T,) pivot frame of each frame's window
        redundancy = (xn * xn[pivot_of]).sum(-1)  # (T, P); pivot frames compare with themselves
        is_pivot = (pivot_of == t).unsqueeze(1).expand(T, P).reshape(-1)
        redundancy = redundancy.reshape(-1)
        n_pivot = int(is_pivot.sum())
        above = int(((redundancy > self.threshold) & ~is_pivot).sum())
        if k <= n_pivot:
            keep = even_fill(is_pivot, k)
        else:
            score = redundancy.masked_fill(is_pivot, float("-inf"))
            order = torch.sort(score, stable=True).indices  # pivots first, then least redundant
            keep = torch.zeros(T * P, dtype=torch.bool, device=dev)
            keep[order[:k]] = True
        return keep, None, {"pivot_tokens": n_pivot, "above_threshold": above}
