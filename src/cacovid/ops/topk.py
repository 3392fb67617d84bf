"""Per-row top-k masks with a different k in every row, without a Python loop over rows.

Selectors keep "the top k_t tokens of frame t" with per-frame budgets k_t (CaCoVID step 3, VidCom2,
VisionZip); looping over thousands of frames per evaluation is slow, so the rank of every entry is
computed once with a stable sort and compared with its row's k. Ties go to the lower index.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cacovid.ops.fill import _as_counts


def topk_rows_mask(scores: Tensor, counts: Tensor | int, *, largest: bool = True) -> Tensor:
    """(B, M) bool with exactly counts[b] True in row b: the entries with the largest (or smallest)
    scores (B, M); ties are broken towards the lower index. NaN scores raise ValueError.

    Entries with score -inf (largest=True) are still eligible, so a caller can exclude tokens only
    by asking for at most as many as remain; counts outside [0, M] raise ValueError.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError("scores must be a 2-D tensor (B, M)")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    B, M = scores.shape
    counts = _as_counts(counts, B, scores.device)
    if bool((counts < 0).any()) or bool((counts > M).any()):
        raise ValueError(f"per-row counts must lie in [0, {M}], got {counts.tolist()}")
    order = torch.sort(scores, dim=1, descending=largest, stable=True).indices  # (B, M)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(M, device=scores.device).expand(B, M))
    return ranks < counts.unsqueeze(1)
