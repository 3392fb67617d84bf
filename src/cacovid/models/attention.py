"""Read attention weights out of a model that normally runs fused (SDPA) attention.

Why: VisionZip-style and FastV-style selectors need attention maps, which fused kernels never
materialise. Rather than switching the whole model to slow eager attention, the one module of
interest is run eagerly for one call and its weights are captured with a forward hook; the model's
configuration is restored afterwards, even on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eager_attention(*modules: nn.Module) -> Iterator[None]:
    """Temporarily run the given (pre-trained) models with eager attention.

    Each module's `config._attn_implementation_internal` is set to "eager" and restored on exit.
    Modules share configs with their children, so passing a tower switches all of its layers.
    """
    saved = []
    for m in modules:
        cfg = m.config
        saved.append((cfg, getattr(cfg, "_attn_implementation_internal", None)))
        cfg._attn_implementation_internal = "eager"
    try:
        yield
    finally:
        for cfg, value in reversed(saved):
            cfg._attn_implementation_internal = value


@contextlib.contextmanager
def capture_output(module: nn.Module, index: int | None = None) -> Iterator[list]:
    """Collect `module`'s outputs (or output[index]) for every call inside the block."""
    store: list = []

    def hook(_mod: nn.Module, _args, output) -> None:
        store.append(output if index is None else output[index])

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


class StopForward(Exception):
    """Raised by `stop_after` to end a forward pass once the module of interest has run."""


@contextlib.contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    """End the enclosing forward right after `module` (FastV-style ranking needs only layers ≤ K).

    The block swallows the `StopForward` it caused, so the caller just reads what it captured.
    """

    def hook(_mod: nn.Module, _args, _output) -> None:
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    except StopForward:
        pass
    finally:
        handle.remove()


@contextlib.contextmanager
def capture_inputs(module: nn.Module) -> Iterator[list]:
    """Collect `(args, kwargs)` of every call of `module` inside the block."""
    store: list = []

    def hook(_mod: nn.Module, args, kwargs) -> None:
        store.append((args, dict(kwargs)))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield store
    finally:
        handle.remove()


def received_attention(weights: torch.Tensor) -> torch.Tensor:
    """(..., heads, Q, K) attention probabilities -> (..., K) mean attention each key received."""
    return weights.float().mean(dim=(-3, -2))
