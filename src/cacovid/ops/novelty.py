"""Temporal novelty: how much of a token's content is missing from the video's other frames.

Why: content that persists through a video (background, objects that stay in view) is redundant
frame after frame, while content seen in only a few frames has nowhere else to be read from; dropping
it loses it for good. Temporal-redundancy pruners (DyCoke, FastVID, PruneVID) compare a token with the
token at the *same position* in neighbouring frames, which moving objects defeat. Here a token is
compared with *every* token of each other frame (position-free), so an object that moves but stays in
view is still recognised as persistent.

novelty_i = 1 − mean over other frames t' of max_j cos(x_i, x_j), j in frame t'.

It ranges over [0, 2]: 0 when every other frame holds an exact copy of the token's feature. With one
frame there is nothing to compare with and every token gets 0. The cost is one (P × N) similarity
block per frame, so memory stays O(P·N) for long videos.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["standardise", "temporal_novelty"]


def temporal_novelty(features: Tensor) -> Tensor:
    """(T, P) novelty of each token of `features` (T frames, P tokens per frame, D features)."""
    if not isinstance(features, Tensor) or features.dim() != 3:
        raise ValueError("features must be a (T, P, D) tensor")
    T, P, D = features.shape
    if T == 0 or P == 0 or D == 0:
        raise ValueError(f"features must be non-empty, got shape {tuple(features.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or inf")
    if T == 1:
        return features.new_zeros(1, P, dtype=torch.float32)
    x = torch.nn.functional.normalize(features.float(), dim=-1)
    flat = x.reshape(T * P, D)
    out = torch.empty(T, P, dtype=torch.float32, device=features.device)
    for t in range(T):
        best = (x[t] @ flat.T).reshape(P, T, P).amax(dim=-1)  # (P, T): best match in each frame
        best[:, t] = 0.0  # a frame is not compared with itself
        out[t] = 1.0 - best.sum(dim=1) / (T - 1)
    return out


def standardise(values: Tensor, eps: float = 1e-6) -> Tensor:
    """(v − mean) / (std + eps) over all entries: a prior on a fixed scale whatever the host's features.

    A constant input (no spread, e.g. a one-frame video's novelty) gives zeros, not NaN.
    """
    v = values.float()
    if v.numel() < 2:
        return torch.zeros_like(v)
    return (v - v.mean()) / (v.std() + eps)
