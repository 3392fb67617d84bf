"""VidCom2-style frame-adaptive distinctiveness selection (Liu et al., "Video Compression Commander:
Plug-and-Play Inference Acceleration for Video Large Language Models", EMNLP 2025, arXiv 2505.14454).

The paper's two steps:
1. Frame compression adjustment: a frame's uniqueness is how little its tokens resemble the whole
   video; frame budgets are r_t = r · (1 + σ_t − mean σ) with σ = softmax(uniqueness / τ) (τ = 0.01),
   so unique frames keep more tokens while the average stays r.
2. Adaptive token compression: inside each frame keep the tokens *least* similar to the video centre
   plus the frame centre (the distinctive details).

Here, on unit-normalised projected tokens (T, P, D): video centre v = mean over all tokens, frame
centre g_t = mean over the frame; similarity = cosine. Uniqueness u_t = −mean_i cos(x_ti, v);
shares_t = (1 + σ_t − 1/T)/T; per-frame counts come from `ops.allocate` (caps at P, exact total).
Token score = −(cos(x_ti, v) + cos(x_ti, g_t)); the top k_t per frame are kept.
Simplified: cosine similarity instead of the published code's multi-scale Gaussian kernel and its
low-variance channel selection; exact budgets instead of per-frame rounding. Pure pruning.
Parameters: `temperature` τ (0.01), `video_weight`/`frame_weight` (1, 1) of the two similarities.
"""

from __future__ import annotations

import torch

from cacovid.ops.budget import allocate
from cacovid.ops.topk import topk_rows_mask
from cacovid.selectors.base import BaseSelector, SelectResult, unit
from cacovid.types import EncodedPrompt


class VidCom2Selector(BaseSelector):
    """Frame budgets from frame uniqueness, then the most distinctive tokens per frame."""

    name = "vidcom2"

    def __init__(
        self, temperature: float = 0.01, video_weight: float = 1.0, frame_weight: float = 1.0
    ) -> None:
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if video_weight < 0 or frame_weight < 0 or video_weight + frame_weight == 0:
            raise ValueError("video_weight and frame_weight must be >= 0 and not both 0")
        self.temperature = float(temperature)
        self.video_weight = float(video_weight)
        self.frame_weight = float(frame_weight)

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        xn = unit(prompt.frame_features())  # (T, P, D)
        T, P, _ = xn.shape
        v = unit(xn.mean(dim=(0, 1)))  # (D,)
        g = unit(xn.mean(dim=1))  # (T, D)
        sim_v = xn @ v  # (T, P)
        sim_g = (xn * g.unsqueeze(1)).sum(-1)  # (T, P)
        uniq = -sim_v.mean(1)  # (T,)
        sigma = torch.softmax((uniq - uniq.max()) / self.temperature, dim=0)
        shares = (1.0 + sigma - 1.0 / T) / T
        budgets = allocate(shares, k, 0, P)
        score = -(self.video_weight * sim_v + self.frame_weight * sim_g)
        keep = topk_rows_mask(score, budgets.to(xn.device)).reshape(-1)
        return keep, None, {"frame_budgets": budgets.tolist()}
