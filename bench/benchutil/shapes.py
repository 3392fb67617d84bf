"""LLaVA-OneVision-7B's shape without its weights: what the 7B-shape benchmarks build from random tensors.

`selectors_speed.py`, `selection_memory.py` and `overhead.py` time CaCoVID at the size that matters
(Qwen2-7B's language model: hidden 3584, 28 layers, 28 heads, 4 KV heads, intermediate 18944; 32
frames x 196 tokens) without a 7B checkpoint: costs depend on shapes, not on trained weights. One
definition here keeps their prompts, policies and layers the same, so their figures can be compared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# LLaVA-OneVision-7B (Qwen2-7B language model) text config: what the 7B-sized policy layer copies.
QWEN2_7B_TEXT = dict(
    model_type="qwen2",
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    hidden_act="silu",
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    tie_word_embeddings=False,
)
PREFIX, SUFFIX = 14, 48  # text before and after the video: system prompt / newline, question, reply cue
# `--quick`: a small shape with the same structure (GQA, several frames), for smoke tests in seconds.
QUICK = dict(frames=2, side=4, hidden=256, heads=4, kv_heads=2, intermediate=512)


def text_config(quick: bool = False) -> dict[str, Any]:
    """The copied layer's text config: Qwen2-7B's, or the `--quick` shape's."""
    if not quick:
        return dict(QWEN2_7B_TEXT)
    return dict(
        QWEN2_7B_TEXT,
        hidden_size=QUICK["hidden"],
        num_attention_heads=QUICK["heads"],
        num_key_value_heads=QUICK["kv_heads"],
        intermediate_size=QUICK["intermediate"],
        vocab_size=512,
    )


def fake_prompt(
    frames: int = 32,
    tokens_per_side: int = 14,
    hidden: int = 3584,
    *,
    prefix: int = PREFIX,
    suffix: int = SUFFIX,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
):
    """An EncodedPrompt of LLaVA-OneVision's layout from random tensors: `prefix` text tokens, the
    T x H x W video grid, `suffix` text tokens (image_newline, question, assistant prompt).

    Features are N(0, 1) with a per-frame shared component (neighbouring tokens of a real video are
    correlated), the vision attention is a random positive vector summing to 1, and ~1 % of tokens
    are marked as evidence (so the oracle runs).
    """
    from cacovid.types import EncodedPrompt

    gen = torch.Generator().manual_seed(seed)
    P = tokens_per_side * tokens_per_side
    N = frames * P
    L = prefix + N + suffix
    embeds = torch.randn(L, hidden, generator=gen)
    frame_part = torch.randn(frames, 1, hidden, generator=gen)
    video = embeds[prefix : prefix + N].view(frames, P, hidden)
    video.mul_(0.6).add_(0.8 * frame_part)
    attn = torch.rand(N, generator=gen).pow(4)
    evidence = torch.rand(N, generator=gen) < 0.01
    evidence[0] = True
    return EncodedPrompt(
        inputs_embeds=embeds.to(device=device, dtype=dtype),
        position_ids=torch.arange(L, device=device),
        attention_mask=torch.ones(L, dtype=torch.long, device=device),
        video_positions=torch.arange(prefix, prefix + N, device=device),
        video_grid=(frames, tokens_per_side, tokens_per_side),
        evidence_mask=evidence.to(device),
        extras={"vision_attention": (attn / attn.sum()).to(device=device, dtype=torch.float32)},
        meta={"item_id": "fake-7b"},
    )


def big_policy(
    device: torch.device,
    dtype: torch.dtype,
    text_config: dict[str, Any] | None = None,
    **policy_fields: Any,
):
    """A CaCoVID policy around one randomly initialised Qwen2-7B-sized decoder layer (`policy_fields`:
    further `PolicyConfig` fields, such as the per-token terms of a shipped policy)."""
    from cacovid.policy import CaCoVIDPolicy, PolicyConfig

    config = PolicyConfig(
        host_name="fake-llava-onevision-7b",
        host_family="llava_onevision",
        text_config=dict(text_config or QWEN2_7B_TEXT),
        **policy_fields,
    )
    return CaCoVIDPolicy(config).to(device=device, dtype=dtype).eval()


def causal_layer(config: dict[str, Any], device: torch.device, dtype: torch.dtype):
    """One randomly initialised decoder layer of the host class and its rotary embedding, causal, sdpa
    (given no mask, the kernel applies causality itself: no L x L tensor is built)."""
    from cacovid.policy.layers import build_host_modules

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer, rotary = build_host_modules(config)
    for module in layer.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = "sdpa"
    return layer.to(device=device, dtype=dtype).eval(), rotary.to(device=device, dtype=dtype)


def layer_call(layer, rotary, embeds: torch.Tensor) -> Callable[[], Any]:
    """A no-grad causal forward of `layer` over the (n, D) sequence `embeds` (positions 0 … n-1)."""
    hidden = embeds.unsqueeze(0)
    pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    with torch.no_grad():
        cos_sin = rotary(hidden, pos)

    def run() -> None:
        with torch.no_grad():
            layer(hidden, attention_mask=None, position_ids=pos, position_embeddings=cos_sin)

    return run


def build_language_model(config: dict[str, Any], device: torch.device, dtype: torch.dtype):
    """The host's whole causal language model with random weights, built directly on `device` in
    `dtype` (sdpa attention): the prefill a compressed prompt goes through."""
    from transformers import AutoModelForCausalLM

    from cacovid.policy.layers import text_config_from_dict

    cfg = text_config_from_dict(config)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval()
