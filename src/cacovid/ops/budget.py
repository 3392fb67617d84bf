"""Exact integer budgets per frame (docs/method.md §3 step 2).

Rounding shares·total never sums to the total in general, and clipping moves it further; the fix-up
adds one token at a time to the frame with the fewest tokens (below its cap) or removes one at a time
from the frame with the most (above its floor) until the sum is exact. Ties go to the lower frame
index. A heap gives the same result as the one-at-a-time loop in O(diff·log T).
"""

from __future__ import annotations

import heapq

import torch
from torch import Tensor

from cacovid.ops.fill import uniform_indices


def _bound(x: int | Tensor, T: int, what: str) -> list[int]:
    if isinstance(x, Tensor):
        if x.dim() == 0:
            return [int(x)] * T
        if x.shape != (T,):
            raise ValueError(f"{what} must be an int or a ({T},) tensor, got shape {tuple(x.shape)}")
        if x.is_floating_point() and not bool((x == x.round()).all()):
            raise ValueError(f"{what} must hold integers")
        return [int(v) for v in x.tolist()]
    return [int(x)] * T


def allocate(shares: Tensor, total: int, low: int | Tensor, high: int | Tensor) -> Tensor:
    """(T,) long counts: round(shares (T,) · total), clipped to [low, high] per frame, then adjusted
    one token at a time until they sum to exactly `total`.

    `shares` are non-negative weights, normally summing to 1 (they are not renormalised: the fix-up
    absorbs any mismatch). `low`/`high` are ints or (T,) integer tensors. Raises ValueError when the
    bounds make `total` unreachable (Σlow > total or Σhigh < total) or inputs are malformed.
    """
    if not isinstance(shares, Tensor) or shares.dim() != 1 or shares.numel() == 0:
        raise ValueError("shares must be a non-empty 1-D tensor (T,)")
    if not bool(torch.isfinite(shares).all()) or bool((shares < 0).any()):
        raise ValueError("shares must be finite and non-negative")
    T = shares.numel()
    total = int(total)
    lo, hi = _bound(low, T, "low"), _bound(high, T, "high")
    if any(a < 0 for a in lo) or any(a > b for a, b in zip(lo, hi, strict=True)):
        raise ValueError("bounds must satisfy 0 <= low <= high per frame")
    if sum(lo) > total or sum(hi) < total:
        raise ValueError(
            f"cannot allocate {total} tokens over {T} frames with bounds summing to [{sum(lo)}, {sum(hi)}]"
        )
    raw = torch.round(shares.double() * total).long().tolist()
    counts = [min(max(r, a), b) for r, a, b in zip(raw, lo, hi, strict=True)]
    diff = total - sum(counts)
    if diff > 0:
        heap = [(c, t) for t, c in enumerate(counts) if c < hi[t]]
        heapq.heapify(heap)
        for _ in range(diff):
            c, t = heapq.heappop(heap)
            counts[t] = c + 1
            if c + 1 < hi[t]:
                heapq.heappush(heap, (c + 1, t))
    elif diff < 0:
        heap = [(-c, t) for t, c in enumerate(counts) if c > lo[t]]
        heapq.heapify(heap)
        for _ in range(-diff):
            negc, t = heapq.heappop(heap)
            counts[t] = -negc - 1
            if counts[t] > lo[t]:
                heapq.heappush(heap, (-counts[t], t))
    return torch.tensor(counts, dtype=torch.long, device=shares.device)


def even_frame_budgets(num_frames: int, per_frame: int, total: int) -> Tensor:
    """(T,) long: `total` tokens spread over T frames of `per_frame` tokens as evenly as possible.

    Every frame gets floor(total/T); the remainder goes one each to evenly spaced frames (not to
    the first frames), so no part of the video is systematically favoured.
    """
    T, P, total = int(num_frames), int(per_frame), int(total)
    if T <= 0 or P <= 0:
        raise ValueError(f"need a positive grid, got T={T}, P={P}")
    if not 0 <= total <= T * P:
        raise ValueError(f"total {total} must lie in [0, {T * P}]")
    base, rem = divmod(total, T)
    counts = torch.full((T,), base, dtype=torch.long)
    counts[uniform_indices(T, rem)] += 1
    return counts
