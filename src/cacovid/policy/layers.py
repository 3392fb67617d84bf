"""The host decoder layer, rebuilt from a text config and run bidirectionally.

transformers' decoder layers are written for causal LMs: their attention modules carry
`is_causal = True`, and the sdpa / flash kernels switch causality on by themselves whenever no mask is
passed. The CaCoVID scorer must let every video token see the question that follows it, so this module
(1) clears `is_causal` on every attention module of the copied layer, (2) passes `is_causal=False` on
every call and (3) passes an explicit mask that lets every real token see every real token. Any one of
the three alone would be fragile across transformers versions.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

# model_type of the host *text* config → (transformers module, decoder layer class, rotary class).
_HOST_LAYERS: dict[str, tuple[str, str, str]] = {
    "qwen2": ("qwen2", "Qwen2DecoderLayer", "Qwen2RotaryEmbedding"),
    "qwen2_vl_text": ("qwen2_vl", "Qwen2VLDecoderLayer", "Qwen2VLRotaryEmbedding"),
    "qwen2_5_vl_text": ("qwen2_5_vl", "Qwen2_5_VLDecoderLayer", "Qwen2_5_VLRotaryEmbedding"),
    "llama": ("llama", "LlamaDecoderLayer", "LlamaRotaryEmbedding"),
}


def text_config_from_dict(d: dict[str, Any]):
    """Rebuild a transformers text config from its `to_dict()` form."""
    from transformers import CONFIG_MAPPING

    model_type = d.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"unknown host text model_type {model_type!r} in policy config")
    return CONFIG_MAPPING[model_type].from_dict(dict(d))


def build_host_modules(text_config_dict: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised (decoder layer 0, rotary embedding) of the host's own classes.

    Used when a saved policy is loaded without its host: the weights come from the checkpoint.
    """
    model_type = text_config_dict.get("model_type")
    if model_type not in _HOST_LAYERS:
        raise ValueError(
            f"cannot rebuild a decoder layer for host text model_type {model_type!r} without the host; "
            f"known: {sorted(_HOST_LAYERS)} (pass host=… to from_pretrained)"
        )
    module_name, layer_cls, rotary_cls = _HOST_LAYERS[model_type]
    mod = importlib.import_module(f"transformers.models.{module_name}.modeling_{module_name}")
    config = text_config_from_dict(text_config_dict)
    return getattr(mod, layer_cls)(config, 0), getattr(mod, rotary_cls)(config=config)


def host_attn_implementation(host: Any) -> str:
    """The attention kernel the host's language model runs ("eager", "sdpa", "flash_attention_2", …),
    read from its text config, else its top-level config; "sdpa" (PolicyConfig's default) when the
    host names none the policy layer can run."""
    from cacovid.policy.config import ATTN_IMPLEMENTATIONS

    configs = [getattr(host, "text_config", None), getattr(getattr(host, "model", None), "config", None)]
    for cfg in configs:
        name = getattr(cfg, "_attn_implementation", None) if cfg is not None else None
        if name in ATTN_IMPLEMENTATIONS:
            return name
    return "sdpa"


def make_bidirectional(layer: nn.Module, attn_implementation: str) -> int:
    """Clear causality on every attention module of `layer` and pin its kernel. Returns how many."""
    n = 0
    seen_configs = set()
    for module in layer.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
            n += 1
        cfg = getattr(module, "config", None)
        if cfg is not None and id(cfg) not in seen_configs and hasattr(cfg, "_attn_implementation"):
            seen_configs.add(id(cfg))
            cfg._attn_implementation = attn_implementation
    if n == 0:
        raise ValueError(f"{type(layer).__name__} has no attention module with an `is_causal` flag")
    return n


def bidirectional_mask(
    valid: torch.Tensor, attn_implementation: str, dtype: torch.dtype
) -> torch.Tensor | None:
    """The attention mask that lets every real token see every real token, in the kernel's format.

    `valid` (B, L) bool marks real (unpadded) tokens. eager and sdpa get an additive float mask
    (B, 1, L, L): 0 for visible keys, the dtype's minimum for padding keys — explicit, so sdpa never
    falls back to its own causal default. Flash kernels take a (B, L) padding mask, or None when
    nothing is padded; for them `is_causal=False` is what removes causality.
    """
    if valid.dim() != 2 or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a (B, L) bool tensor, got {tuple(valid.shape)} {valid.dtype}")
    if attn_implementation.startswith("flash"):
        return None if bool(valid.all()) else valid.long()
    B, L = valid.shape
    mask = torch.zeros(B, 1, L, L, dtype=dtype, device=valid.device)
    return mask.masked_fill(~valid[:, None, None, :], torch.finfo(dtype).min)
