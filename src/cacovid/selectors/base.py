"""What every baseline selector shares: budget validation, timing, and the result checks.

A baseline subclasses `BaseSelector` and implements `_select(prompt, k, generator)`, returning the
(N,) bool keep mask with exactly k True, optional (k, D) merged embeddings, and an info dict. The base
class computes k with `token_budget` (so bad ratios raise ValueError in one place), times only the
selector's own work into `Selection.compression_ms` (synchronising CUDA so GPU time is not hidden),
and checks the count and shapes so a baseline bug cannot silently change a table's budget.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cacovid.types import EncodedPrompt, Selection, token_budget

SelectResult = tuple[Tensor, "Tensor | None", dict[str, Any]]


class BaseSelector:
    """Base class for the baselines; `name` is the method name users type on the command line."""

    name: str = ""

    def select(
        self, prompt: EncodedPrompt, ratio: float, *, generator: torch.Generator | None = None
    ) -> Selection:
        """Keep exactly token_budget(N, ratio) of the prompt's N video tokens."""
        if not isinstance(prompt, EncodedPrompt):
            raise ValueError(f"{self.name}: expected an EncodedPrompt, got {type(prompt).__name__}")
        n = prompt.num_video_tokens
        k = token_budget(n, ratio)
        dev = prompt.inputs_embeds.device
        _sync(dev)
        start = time.perf_counter()
        with torch.no_grad():
            keep, embeds, info = self._select(prompt, k, generator)
        _sync(dev)
        ms = (time.perf_counter() - start) * 1000.0
        if keep.shape != (n,) or keep.dtype != torch.bool:
            raise RuntimeError(f"{self.name}: keep mask must be ({n},) bool, got {tuple(keep.shape)}")
        if int(keep.sum()) != k:
            raise RuntimeError(f"{self.name}: kept {int(keep.sum())} tokens, budget is {k}")
        if embeds is not None and embeds.shape != (k, prompt.hidden_size):
            raise RuntimeError(f"{self.name}: merged embeds must be ({k}, {prompt.hidden_size})")
        return Selection(keep=keep, embeds=embeds, compression_ms=ms, info=info)

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unit(x: Tensor) -> Tensor:
    """x (…, D) as float32 unit vectors along the last dimension (for cosine similarities)."""
    return F.normalize(x.float(), dim=-1)


def check_positive_int(value: int, what: str, minimum: int = 1) -> int:
    """Validate a constructor parameter that must be an integer >= minimum."""
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(value: float, what: str, *, open_low: bool = False) -> float:
    """Validate a constructor parameter in [0, 1] (or (0, 1] with open_low)."""
    v = float(value)
    if not (v == v) or v > 1.0 or v < 0.0 or (open_low and v == 0.0):
        raise ValueError(f"{what} must lie in {'(0' if open_low else '[0'}, 1], got {value!r}")
    return v
