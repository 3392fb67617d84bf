"""Optimiser and learning-rate schedule for the policy.

The schedule counts *optimiser steps* (items × iterations), not items: the published code sized its
cosine per item but stepped it per iteration, so its learning rate ran out early (docs/method.md §4
step 6, §8).
"""

from __future__ import annotations

import math

import torch

from cacovid.policy.network import CaCoVIDPolicy


def cosine_with_warmup(step: int, total: int, warmup: int, min_scale: float = 0.0) -> float:
    """LR multiplier at optimiser step `step` (0-based): linear warm-up, then cosine to `min_scale`."""
    if total <= 0:
        raise ValueError(f"total steps must be positive, got {total}")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_scale + (1.0 - min_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(
    policy: CaCoVIDPolicy, lr: float, layer_lr_scale: float = 0.1, weight_decay: float = 0.0
) -> torch.optim.AdamW:
    """AdamW with two groups: heads (and norm) at `lr`, the copied decoder layer at lr·scale."""
    groups = [{"params": policy.head_parameters(), "lr": lr, "name": "heads"}]
    layer = policy.layer_parameters()
    if layer and layer_lr_scale > 0:
        groups.append({"params": layer, "lr": lr * layer_lr_scale, "name": "layer"})
    else:
        for p in layer:
            p.requires_grad_(False)
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float, min_scale: float
) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(int(total_steps), 1)
    warmup = int(round(warmup_fraction * total))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, total, warmup, min_scale)
    )
