"""Merging dropped tokens into kept ones.

Merging baselines (VisionZip, FastVID, PruneVid) replace each kept token's feature by the (weighted)
mean of itself and the dropped tokens assigned to it. The merged token keeps the kept token's index,
hence its original position id, so the result is a plain (K, D) replacement for the kept tokens in
increasing index order (what `Selection.embeds` holds).
"""

from __future__ import annotations

import torch
from torch import Tensor


def merge_assigned(x: Tensor, keep: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """(K, D) merged features for the kept tokens of x (N, D), in increasing index order.

    `keep` (N,) bool marks the K kept tokens. `target` (N,) long gives, for every token, the index of
    the kept token it merges into, or -1 to discard it; kept tokens must target themselves.
    `weights` (N,) optional non-negative weights (e.g. how many original tokens a token already
    stands for); default 1 each. Each kept token becomes Σ w·x / Σ w over the tokens targeting it.
    """
    if x.dim() != 2 or keep.shape != (x.shape[0],) or target.shape != (x.shape[0],):
        raise ValueError("merge_assigned needs x (N, D), keep (N,) and target (N,)")
    if keep.dtype != torch.bool:
        raise ValueError("keep must be torch.bool")
    N = x.shape[0]
    idx = torch.arange(N, device=x.device)
    if not bool((target[keep] == idx[keep]).all()):
        raise ValueError("every kept token must target itself")
    valid = target >= 0
    if bool((target >= N).any()) or not bool(keep[target[valid]].all()):
        raise ValueError("targets must be kept tokens or -1")
    w = torch.ones(N, dtype=torch.float32, device=x.device) if weights is None else weights.float()
    if w.shape != (N,) or bool((w < 0).any()):
        raise ValueError("weights must be (N,) and non-negative")
    xf = x.float()
    sums = torch.zeros_like(xf).index_add_(0, target[valid], xf[valid] * w[valid].unsqueeze(1))
    tot = torch.zeros(N, dtype=torch.float32, device=x.device).index_add_(0, target[valid], w[valid])
    out = sums[keep] / tot[keep].clamp_min(1e-12).unsqueeze(1)
    # A kept token whose own weight is 0 and that attracted nothing keeps its feature unchanged.
    empty = tot[keep] <= 0
    out[empty] = xf[keep][empty]
    return out.to(x.dtype)


def nearest_targets(sim: Tensor, candidates: Tensor) -> Tensor:
    """(B, M) long: for each row b and token i, the index j (within the row) of the most similar
    candidate, from similarities sim (B, M, M) and candidate mask (B, M) bool. Rows without any
    candidate get -1. Ties go to the lower index."""
    masked = sim.masked_fill(~candidates.unsqueeze(1), float("-inf"))
    best = masked.argmax(-1)
    return torch.where(candidates.any(-1, keepdim=True), best, torch.full_like(best, -1))
