"""VisionZip-style dominant + contextual tokens (Yang et al., "VisionZip: Longer is Better but Not
Necessary in Vision Language Models", CVPR 2025).

The paper keeps, per image, (1) *dominant* tokens — those receiving the most attention inside the
vision encoder (from [CLS], or averaged over all queries for SigLIP, which has no [CLS]) — and
(2) a few *contextual* tokens: the remaining tokens are split into evenly spaced targets and the rest,
each of the rest is merged (averaged) into its most similar target by key similarity. The published
split for 64 kept tokens is 54 dominant : 10 contextual.

Here, per frame (the vision encoder sees frames independently), with an even per-frame budget k_t:
- dominant count d_t = round(k_t · dominant / (dominant + contextual)), contextual c_t = k_t − d_t;
- dominance score = `prompt.extras["vision_attention"]` (N,) when the adapter stored it; otherwise
  the L2 norm of the projected token (a proxy: high-attention "sink" tokens have large norms) and
  `Selection.info["dominant_score"]` says "feature_norm";
- contextual targets = c_t evenly spaced tokens (index order) among the non-dominant ones; every other
  non-dominant token merges into its most cosine-similar target of the same frame (projected
  features stand in for the vision keys, which are not kept after encoding).
Merged token = mean of the target and the tokens merged into it; it takes the target's position.
Dominant tokens are returned unchanged. Frames with c_t = 0 simply drop their remaining tokens.
Parameters: `dominant` (54), `contextual` (10) — only their ratio matters; `use_vision_attention`.
"""

from __future__ import annotations

import torch

from cacovid.ops.budget import even_frame_budgets
from cacovid.ops.fill import even_fill_rows
from cacovid.ops.merge import merge_assigned, nearest_targets
from cacovid.ops.topk import topk_rows_mask
from cacovid.selectors.base import BaseSelector, SelectResult, check_positive_int, unit
from cacovid.types import EncodedPrompt


class VisionZipSelector(BaseSelector):
    """Per-frame dominant tokens by vision attention plus merged contextual tokens."""

    name = "visionzip"

    def __init__(self, dominant: int = 54, contextual: int = 10, use_vision_attention: bool = True) -> None:
        self.dominant = check_positive_int(dominant, "dominant")
        self.contextual = check_positive_int(contextual, "contextual", minimum=0)
        self.use_vision_attention = bool(use_vision_attention)

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        x = prompt.frame_features()  # (T, P, D)
        T, P, D = x.shape
        dev = x.device
        budgets = even_frame_budgets(T, P, k).to(dev)
        frac = self.dominant / (self.dominant + self.contextual)
        n_dom = torch.round(budgets.double() * frac).long().clamp(max=budgets)
        n_ctx = budgets - n_dom
        attn = prompt.extras.get("vision_attention") if self.use_vision_attention else None
        if attn is not None:
            if attn.shape != (T * P,):
                raise ValueError(f"extras['vision_attention'] must be ({T * P},), got {tuple(attn.shape)}")
            dom_score, source = attn.float().reshape(T, P).to(dev), "vision_attention"
        else:
            dom_score, source = x.float().norm(dim=-1), "feature_norm"
        dominant = topk_rows_mask(dom_score, n_dom)  # (T, P)
        targets = even_fill_rows(~dominant, n_ctx)  # (T, P)
        keep2 = dominant | targets
        # Every remaining token merges into its most similar target of the same frame.
        xn = unit(x)
        local = nearest_targets(xn @ xn.transpose(1, 2), targets)  # (T, P) index within frame or -1
        offset = (torch.arange(T, device=dev) * P).unsqueeze(1)
        target = torch.where(local >= 0, local + offset, torch.full_like(local, -1))
        target = torch.where(dominant, torch.full_like(target, -1), target)
        flat_idx = torch.arange(T * P, device=dev).reshape(T, P)
        target = torch.where(keep2, flat_idx, target).reshape(-1)
        keep = keep2.reshape(-1)
        embeds = merge_assigned(prompt.video_features, keep, target)
        info = {"dominant_score": source, "dominant": int(n_dom.sum()), "contextual": int(n_ctx.sum())}
        return keep, embeds, info
