"""The published release's budgeted selection (`PolicyConfig.selection_rule="release"`).

Why: docs/method.md §3's selection is the release's idea with exact budgets and a centred fill; a
policy imported from the release (`cacovid import-official`) reproduces the release's answers only
with the release's own arithmetic, which differs in four places (docs/method.md §8):

1. the importance budget is ⌊α·ρ·T·H·W⌋ (not ⌊α·⌊ρN⌋⌋), and the frame budgets are rounded shares of
   round(α·ρ·T·H·W), clipped to [1, ⌊α·H·W·c⌋];
2. the rounding error is then fixed one token at a time on the largest (too many) or smallest (too
   few) frame, whatever the clip said;
3. the frame shares are clipped to [1/(2T), c/(T·ρ)] without raising the ceiling to the floor;
4. the rest of the budget, ⌊ρ·T·H·W⌋ minus what the scores kept, goes to the not-yet-kept tokens at
   round(linspace(0, n − 1, k)) of their (t, h, w) order: first and last included, not bin centres.

Scores, shares and the per-frame top-k are the same as in `policy/select.py`. Written from the
release's description and behaviour (float expressions in its order, so the same budgets come out),
not from its code. One difference stays: the release keeps nothing when ⌊ρN⌋ = 0; this keeps one
token, as every selector here must.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cacovid.ops.topk import topk_rows_mask


def release_frame_shares(frame_scores: Tensor, ratio: float, cap: float) -> Tensor:
    """(T,) shares softmax(3u / max|u|) clipped to [1/(2T), c/(T·ρ)] and renormalised (all-zero u:
    uniform, where the release would divide by zero)."""
    u = frame_scores.detach().float()
    T = u.numel()
    m = u.abs().max()
    p = torch.softmax(u / m * 3, dim=0) if float(m) > 0 else torch.full_like(u, 1.0 / T)
    p = p.clip(min=1 / (2 * T), max=1 / (T * ratio) * cap)
    return p / p.sum()


def release_frame_budgets(
    frame_scores: Tensor, grid: tuple[int, int, int], ratio: float, alpha: float, cap: float
) -> Tensor:
    """(T,) long per-frame importance budgets, summing to ⌊α·ρ·T·H·W⌋ (see the module docstring)."""
    T, H, W = grid
    shares = release_frame_shares(frame_scores, ratio, cap)
    k = (shares * round(alpha * ratio * H * W * T)).round()
    k = k.clip(min=1, max=int(alpha * H * W * cap)).long()
    rest = math.floor(alpha * ratio * H * W * T) - int(k.sum())
    while rest < 0:
        k[k.argmax()] -= 1
        rest += 1
    while rest > 0:
        k[k.argmin()] += 1
        rest -= 1
    return k


def linspace_fill(free: Tensor, count: int) -> Tensor:
    """(N,) bool: `count` of the True entries of `free`, at round(linspace(0, n − 1, count)) of their
    order (first and last included)."""
    idx = free.nonzero(as_tuple=True)[0]
    n = idx.numel()
    if not 0 <= count <= n:
        raise ValueError(f"cannot fill {count} tokens from {n} free ones")
    out = torch.zeros_like(free)
    if count:
        picks = torch.linspace(0, n - 1, count, device=free.device).round().long()
        out[idx[picks]] = True
    return out


def release_select(
    token_scores: Tensor,
    frame_scores: Tensor,
    ratio: float,
    grid: tuple[int, int, int],
    *,
    alpha: float = 0.5,
    cap: float | None = None,
) -> Tensor:
    """(N,) bool keep mask as the release selects: importance share α (its `imp_ratio`), per-frame
    cap c (its `max_sample_ratio_for_each_frame`, default 1.5·ρ), then its evenly spaced fill.

    `token_scores` (N,) or (T, H·W) are s = z_keep − z_drop, `frame_scores` (T,) are u; `grid` is
    the prompt's (T, H, W).
    """
    T, H, W = (int(x) for x in grid)
    N = T * H * W
    if not isinstance(frame_scores, Tensor) or frame_scores.shape != (T,):
        raise ValueError(f"frame_scores must be ({T},) for grid {grid}")
    if not isinstance(token_scores, Tensor) or token_scores.numel() != N:
        raise ValueError(f"token_scores must hold {N} scores for grid {grid}")
    if not (bool(torch.isfinite(token_scores).all()) and bool(torch.isfinite(frame_scores).all())):
        raise ValueError("policy scores must be finite")
    if not 0 < float(ratio) <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    c = 1.5 * ratio if cap is None else float(cap)
    if not c > 0 or not math.isfinite(c):
        raise ValueError(f"cap must be positive, got {cap}")
    k_t = release_frame_budgets(frame_scores, (T, H, W), ratio, alpha, c)
    s = token_scores.detach().float().reshape(T, H * W)
    keep = topk_rows_mask(s, k_t.clamp(0, H * W).to(s.device)).reshape(N)
    total = max(1, math.floor(ratio * T * H * W))
    if alpha < 1.0 and total > int(keep.sum()):
        keep = keep | linspace_fill(~keep, total - int(keep.sum()))
    return keep
