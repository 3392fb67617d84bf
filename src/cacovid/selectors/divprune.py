"""DivPrune: diversity-based token pruning (Alvar et al., "DivPrune: Diversity-based Visual Token
Pruning for Large Multimodal Models", CVPR 2025).

The paper casts pruning as a Max-Min Diversity Problem — keep the subset whose closest pair is as far
apart as possible — and solves it greedily: start from the most isolated token (largest distance to
its own nearest neighbour) and repeatedly add the token farthest (max over candidates of the min
distance to the kept set) from what is already kept. Distance is cosine distance 1 − cos(x_i, x_j)
over the projected video tokens, all N tokens of the video at once (no per-frame split).

Simplifications: none in the algorithm; we run it on the projected tokens before the language model
(as the paper does for LLaVA-style models). Ties go to the lower index. `metric="euclidean"` is an
extra option (useful for hand-checkable tests). For N <= `max_matrix_tokens` the full (N, N) distance
matrix is built once (as the paper's implementation does); above that, distances to each newly kept
token are computed on the fly to bound memory. Pure pruning (no merging).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cacovid.selectors.base import BaseSelector, SelectResult, check_positive_int, unit
from cacovid.types import EncodedPrompt

_METRICS = ("cosine", "euclidean")


class DivPruneSelector(BaseSelector):
    """Greedy max-min diversity (farthest-point) selection over all video tokens.

    Parameters: `metric` ("cosine", the paper's, or "euclidean"); `max_matrix_tokens` (default 8192)
    above which the pairwise matrix is not materialised.
    """

    name = "divprune"

    def __init__(self, metric: str = "cosine", max_matrix_tokens: int = 8192) -> None:
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
        self.metric = metric
        self.max_matrix_tokens = check_positive_int(max_matrix_tokens, "max_matrix_tokens")

    def _dist_to(self, x: Tensor, rows: Tensor) -> Tensor:
        """(len(rows), N) distances from x[rows] to every token of x (N, D)."""
        if self.metric == "cosine":
            return (x[rows] @ x.T).neg_().add_(1.0).clamp_min_(0.0)
        return torch.cdist(x[rows], x)

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        x = prompt.video_features
        x = unit(x) if self.metric == "cosine" else x.float()
        n = x.shape[0]
        keep = torch.zeros(n, dtype=torch.bool, device=x.device)
        full = self._dist_to(x, torch.arange(n, device=x.device)) if n <= self.max_matrix_tokens else None
        # First token: the most isolated one (largest nearest-neighbour distance, self excluded).
        if n == 1:
            first = 0
        elif full is not None:
            first = int(full.fill_diagonal_(float("inf")).amin(1).argmax())
            full.fill_diagonal_(0.0)
        else:
            nn = torch.empty(n, device=x.device)
            for s in range(0, n, 1024):
                rows = torch.arange(s, min(s + 1024, n), device=x.device)
                d = self._dist_to(x, rows)
                d[torch.arange(len(rows), device=x.device), rows] = float("inf")
                nn[rows] = d.amin(1)
            first = int(nn.argmax())
        keep[first] = True
        first_row = torch.tensor([first], device=x.device)
        mind = full[first].clone() if full is not None else self._dist_to(x, first_row)[0]
        mind[first] = float("-inf")
        for _ in range(k - 1):
            j = int(mind.argmax())
            keep[j] = True
            d = full[j] if full is not None else self._dist_to(x, torch.tensor([j], device=x.device))[0]
            mind = torch.minimum(mind, d)
            mind[j] = float("-inf")
        return keep, None, {"first": first}
