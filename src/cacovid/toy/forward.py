"""The toy model's forward, split into the pieces training needs to reach inside.

Training runs the model's own modules, not its `forward`: stage 2 runs the frozen vision tower
without autograd (`video_features`), reads the language model's last hidden states at the answer
positions only (`lm_hidden_tail`), and the grounding loss needs one query's attention row, which
the fused attention kernel never materialises (`query_attention` recomputes it, with its own
rotary embedding). Tests check each piece against the model's own path and the adapter's logits.
"""

from __future__ import annotations

import torch
from torch import nn


def video_features(model, pixel_values_videos: torch.Tensor, train_tower: bool) -> torch.Tensor:
    """(B, T*P + 1, D) projected, pooled video tokens + image_newline, as `get_video_features` makes them.

    Split into tower / projector so stage 2 can run the frozen tower without autograd (a test checks
    equality with the model's own `get_video_features`).
    """
    m = model.model
    B, T = pixel_values_videos.shape[:2]
    flat = pixel_values_videos.reshape(B * T, *pixel_values_videos.shape[2:])
    with torch.set_grad_enabled(train_tower and torch.is_grad_enabled()):
        hidden = m.vision_tower(flat, output_hidden_states=True).hidden_states[
            model.config.vision_feature_layer
        ]
    feats = m.apply_pooling(m.multi_modal_projector(hidden))
    feats = feats.reshape(B, -1, feats.shape[-1])
    newline = m.image_newline[None, None, :].expand(B, 1, -1).to(feats.dtype)
    return torch.cat([feats, newline], dim=1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of (B, H, L, hd) `x`, as Qwen2 applies it (rotate-half)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


def query_attention(
    attn: nn.Module, args: tuple, kwargs: dict, mask: torch.Tensor, query: int
) -> torch.Tensor:
    """(B, H, L) attention probabilities of one query position in a Qwen2 attention layer.

    Recomputed from the layer's captured inputs for that single query row (causal + padding mask),
    so the model keeps running fused attention and no (L, L) map is built.
    """
    h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    cos, sin = kwargs["position_embeddings"]
    B, L, _ = h.shape
    hd = attn.head_dim
    q = attn.q_proj(h[:, query:][:, :1]).view(B, 1, -1, hd).transpose(1, 2)  # (B, H, 1, hd)
    k = attn.k_proj(h).view(B, L, -1, hd).transpose(1, 2)  # (B, Hkv, L, hd)
    qi = query % L
    q = _rotate(q, cos[:, qi : qi + 1], sin[:, qi : qi + 1])
    k = _rotate(k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)).squeeze(2) * attn.scaling  # (B, H, L)
    allowed = mask.bool() & (torch.arange(L, device=mask.device) <= qi)  # (B, L)
    scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
    return scores.softmax(-1)


def lm_hidden_tail(model, x, mask, pid, n_tail: int) -> torch.Tensor:
    """(B, n_tail, D) last hidden states of the language model at the last `n_tail` positions."""
    out = model.model.language_model(inputs_embeds=x, attention_mask=mask, position_ids=pid)
    return out.last_hidden_state[:, -n_tail:]


def lm_logits_tail(model, x, mask, pid, n_tail: int) -> torch.Tensor:
    """(B, n_tail, V) next-token logits at the last `n_tail` positions."""
    return model.lm_head(lm_hidden_tail(model, x, mask, pid, n_tail))
