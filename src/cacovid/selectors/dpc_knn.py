"""DPC-kNN diversity selection per frame (docs/method.md §4.4; the density-peak clustering score of
Rodriguez & Laio 2014 with k-NN density, as used for token merging by DPC-kNN/TCFormer and PruneVid).

The budget K is spread evenly over frames (`ops.even_frame_budgets`: floor(K/T) each, the remainder
on evenly spaced frames); inside each frame the projected video tokens (`prompt.frame_features()`,
(T, P, D)) are scored by ρ·δ and the top k_t kept. All frames are scored in one batched call.
Pure pruning (no merging). Parameter: `k_neighbors` (default 4) for the density estimate.
This is also CaCoVID's policy-free "content mode" reference.
"""

from __future__ import annotations

import torch

from cacovid.ops.budget import even_frame_budgets
from cacovid.ops.density import dpc_knn_scores_batched
from cacovid.ops.topk import topk_rows_mask
from cacovid.selectors.base import BaseSelector, SelectResult, check_positive_int
from cacovid.types import EncodedPrompt


class DPCKNNSelector(BaseSelector):
    """Per-frame density-peak selection with an even per-frame budget."""

    name = "dpc_knn"

    def __init__(self, k_neighbors: int = 4) -> None:
        self.k_neighbors = check_positive_int(k_neighbors, "k_neighbors")

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        x = prompt.frame_features()  # (T, P, D)
        T, P, _ = x.shape
        budgets = even_frame_budgets(T, P, k).to(x.device)
        scores = dpc_knn_scores_batched(x, self.k_neighbors)  # (T, P)
        keep = topk_rows_mask(scores, budgets).reshape(-1)
        return keep, None, {"frame_budgets": budgets.tolist()}
