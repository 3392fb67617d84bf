"""Inference-time budgeted selection from policy scores (docs/method.md §3): one policy, any ratio.

Half of the budget (share α) follows the policy: frames get token budgets from their frame scores
(softened and clipped, so no frame starves or hogs the budget), and each frame keeps its best tokens.
The other half is spread evenly over the remaining tokens, which keeps coverage of the whole video when
the policy is wrong. The result always holds exactly `token_budget(N, ρ)` tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cacovid.ops.budget import allocate
from cacovid.ops.fill import even_fill
from cacovid.ops.topk import topk_rows_mask
from cacovid.types import token_budget

FILL_RULES = ("even", "score")


def frame_shares(frame_scores: Tensor, ratio: float, cap: float) -> Tensor:
    """(T,) frame shares p = softmax(3u / max|u|) clipped to [0.5, cap/ratio] × 1/T, renormalised.

    All-equal (or all-zero) scores give the uniform share. If cap/ratio < 0.5 the upper clip is raised
    to the lower one (the cap cannot force shares below the floor).
    """
    u = frame_scores.double()
    T = u.numel()
    m = float(u.abs().max())
    p = torch.softmax(3.0 * u / m, dim=0) if m > 0 else torch.full_like(u, 1.0 / T)
    lo, hi = 0.5 / T, max(cap / ratio, 0.5) / T
    p = p.clamp(lo, hi)
    return p / p.sum()


def frame_budgets(
    frame_scores: Tensor, budget: int, tokens_per_frame: int, ratio: float, alpha: float, cap: float
) -> Tensor:
    """(T,) long importance budgets k_t summing exactly to `budget` (= K_α).

    k_t = round(p_t·K_α) clipped to [1, ⌊α·c·P⌋]; bounds that cannot reach K_α are relaxed (the floor
    drops to 0 when K_α < T, the ceiling rises to ⌈K_α/T⌉ and never passes P), then `allocate`
    fixes the sum one token at a time.
    """
    T, P = frame_scores.numel(), int(tokens_per_frame)
    budget = int(budget)
    if not 0 <= budget <= T * P:
        raise ValueError(f"importance budget {budget} outside [0, {T * P}]")
    low = 1 if budget >= T else 0
    high = min(P, math.floor(alpha * cap * P + 1e-9))
    high = max(high, -(-budget // T), low)
    shares = frame_shares(frame_scores, ratio, cap).to(torch.float32)
    return allocate(shares, budget, low, high)


def budgeted_select(
    token_scores: Tensor,
    frame_scores: Tensor,
    ratio: float,
    *,
    alpha: float = 0.5,
    cap: float | None = None,
    fill: str = "even",
) -> Tensor:
    """(N,) bool keep mask with exactly ⌊ρN⌋ True (at least 1), from policy scores.

    `token_scores` (T, P) (or (N,) with `frame_scores` (T,) giving T) are s = z_keep − z_drop;
    `frame_scores` (T,) are u. α ∈ [0, 1] is the importance share (α = 1: scores only), `cap` the
    per-frame cap c (default 1.5·ρ), `fill` how the rest is spent: "even" (evenly over not-yet-kept
    tokens in (t, h, w) order) or "score" (the next best tokens by s anywhere).
    """
    if not isinstance(frame_scores, Tensor) or frame_scores.dim() != 1 or frame_scores.numel() == 0:
        raise ValueError("frame_scores must be a non-empty (T,) tensor")
    T = frame_scores.numel()
    if not isinstance(token_scores, Tensor) or token_scores.numel() % T or token_scores.numel() == 0:
        raise ValueError(
            f"token_scores must hold T*P scores for T={T} frames, got shape "
            f"{tuple(token_scores.shape) if isinstance(token_scores, Tensor) else type(token_scores)}"
        )
    if token_scores.dim() == 2 and token_scores.shape[0] != T:
        raise ValueError(f"token_scores (T, P) has {token_scores.shape[0]} frames, frame_scores {T}")
    if not (bool(torch.isfinite(token_scores).all()) and bool(torch.isfinite(frame_scores).all())):
        raise ValueError("policy scores must be finite")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if fill not in FILL_RULES:
        raise ValueError(f"fill must be one of {FILL_RULES}, got {fill!r}")
    N = token_scores.numel()
    P = N // T
    K = token_budget(N, ratio)  # validates ratio
    c = 1.5 * ratio if cap is None else float(cap)
    if not c > 0 or not math.isfinite(c):
        raise ValueError(f"cap must be positive, got {cap}")
    s = token_scores.detach().reshape(T, P).float()
    k_alpha = math.floor(alpha * K + 1e-9)
    k_t = frame_budgets(frame_scores.detach(), k_alpha, P, ratio, alpha, c)
    keep = topk_rows_mask(s, k_t.to(s.device)).reshape(N)
    rest = K - k_alpha
    if rest:
        if fill == "even":
            keep = keep | even_fill(~keep, rest)
        else:
            masked = torch.where(keep, torch.full_like(s.reshape(N), -math.inf), s.reshape(N))
            keep = keep | topk_rows_mask(masked.unsqueeze(0), rest).squeeze(0)
    return keep
