"""The copied layer run causally, on request (`PolicyConfig.layer_attention="causal"`).

Why: the policy's layer is bidirectional by design (docs/method.md §2), but the published release's
layer ran causally in practice (docs/method.md §8), and a policy imported from it (`cacovid
import-official`) only scores as it did there if it runs the same way. The layer's own call
(`CaCoVIDPolicy.forward_batch`) stays untouched: a forward pre-hook on the layer adds the causal
part to the padding mask it is given (eager and sdpa kernels take that additive (B, 1, L, L) mask)
and asks flash kernels, which take no such mask, for causality with `is_causal=True`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_FLAG = "_cacovid_causal_hook"


def causal_mask_hook(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Forward pre-hook: block every query from the keys after it; padding stays blocked."""
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.is_floating_point():
        q, k = mask.shape[-2:]
        future = torch.ones(q, k, dtype=torch.bool, device=mask.device).triu(1 + k - q)
        kwargs["attention_mask"] = mask.masked_fill(future, torch.finfo(mask.dtype).min)
    kwargs["is_causal"] = True
    return args, kwargs


def apply_layer_attention(policy: nn.Module) -> bool:
    """Make `policy.layer` run the way `policy.config.layer_attention` says; idempotent.

    Returns True when the layer runs causally. A bidirectional policy is left as it is.
    """
    mode = policy.config.layer_attention
    if mode == "bidirectional":
        return False
    if mode != "causal":
        raise ValueError(f"unknown layer_attention {mode!r}")
    if not getattr(policy.layer, _FLAG, False):
        policy.layer.register_forward_pre_hook(causal_mask_hook, with_kwargs=True)
        setattr(policy.layer, _FLAG, True)
    return True
