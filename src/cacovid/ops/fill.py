"""Spread a number of picks evenly over positions in (t, h, w) index order.

An even spread is the neutral way to spend a budget when no score says otherwise: the uniform
baseline, the oracle's fill and CaCoVID's fill step (docs/method.md §3 step 4) all use it. Pick j of k out
of n candidates is the candidate at index floor((2j + 1) * n / (2k)), the centre of the j-th of k equal
bins, computed in integer arithmetic so the count is exact and the picks are distinct for any
0 < k <= n (consecutive centres are n/k >= 1 apart).
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform_indices(n: int, k: int, *, device: torch.device | str | None = None) -> Tensor:
    """(k,) long: k distinct, evenly spaced, increasing indices in [0, n) (bin centres).

    k = 0 gives an empty tensor; k > n or negative sizes raise ValueError.
    """
    n, k = int(n), int(k)
    if n < 0 or k < 0:
        raise ValueError(f"uniform_indices needs n >= 0 and k >= 0, got n={n}, k={k}")
    if k > n:
        raise ValueError(f"cannot pick {k} distinct indices out of {n}")
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    j = torch.arange(k, dtype=torch.long, device=device)
    return torch.div((2 * j + 1) * n, 2 * k, rounding_mode="floor")


def even_fill(available: Tensor, k: int) -> Tensor:
    """(N,) bool mask choosing exactly k of the True positions of `available` (N,) bool, spread evenly
    over them in index order. Raises ValueError when fewer than k positions are available."""
    if not isinstance(available, Tensor) or available.dtype != torch.bool or available.dim() != 1:
        raise ValueError("available must be a 1-D torch.bool tensor")
    k = int(k)
    idx = available.nonzero().squeeze(1)
    if k < 0 or k > idx.numel():
        raise ValueError(f"cannot fill {k} tokens from {idx.numel()} available positions")
    out = torch.zeros_like(available)
    if k:
        out[idx[uniform_indices(idx.numel(), k, device=available.device)]] = True
    return out


def even_fill_rows(available: Tensor, counts: Tensor | int) -> Tensor:
    """(B, M) bool: in each row b, exactly counts[b] of the available (B, M) bool positions, spread
    evenly in index order — `even_fill` vectorised over rows (e.g. frames) with per-row counts.

    Raises ValueError if a row has fewer available positions than its count.
    """
    if not isinstance(available, Tensor) or available.dtype != torch.bool or available.dim() != 2:
        raise ValueError("available must be a 2-D torch.bool tensor (B, M)")
    B, M = available.shape
    counts = _as_counts(counts, B, available.device)
    n_avail = available.sum(1)
    if bool((counts < 0).any()) or bool((counts > n_avail).any()):
        raise ValueError(f"per-row counts {counts.tolist()} exceed available {n_avail.tolist()}")
    out = torch.zeros_like(available)
    kmax = int(counts.max()) if B else 0
    if kmax == 0:
        return out
    # Columns of available positions first, in index order (stable sort on "not available").
    order = torch.sort((~available).to(torch.int8), dim=1, stable=True).indices  # (B, M)
    j = torch.arange(kmax, device=available.device).unsqueeze(0)  # (1, kmax)
    c = counts.unsqueeze(1).clamp(min=1)
    ranks = torch.div((2 * j + 1) * n_avail.unsqueeze(1), 2 * c, rounding_mode="floor")  # (B, kmax)
    valid = j < counts.unsqueeze(1)
    ranks = torch.where(valid, ranks, torch.zeros_like(ranks)).clamp(max=M - 1)
    cols = order.gather(1, ranks)
    rows = torch.arange(B, device=available.device).unsqueeze(1).expand_as(cols)
    out[rows[valid], cols[valid]] = True
    return out


def _as_counts(counts: Tensor | int, B: int, device: torch.device) -> Tensor:
    """Per-row counts as a (B,) long tensor (an int is broadcast to every row)."""
    if isinstance(counts, Tensor):
        if counts.shape != (B,):
            raise ValueError(f"counts must have shape ({B},), got {tuple(counts.shape)}")
        if counts.is_floating_point() or counts.dtype == torch.bool:
            raise ValueError("counts must be an integer tensor")
        return counts.to(device=device, dtype=torch.long)
    return torch.full((B,), int(counts), dtype=torch.long, device=device)
