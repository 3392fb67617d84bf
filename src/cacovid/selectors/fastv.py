"""FastV-style attention ranking (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2:
Plug-and-Play Inference Acceleration for Large Vision-Language Models", ECCV 2024).

FastV runs the language model on all tokens for the first K layers (default K = 2), ranks the image
tokens by the attention they receive (the paper averages over heads and query positions; we use the
last prompt token's attention, which is what the text-conditioned answer reads) and drops the
lowest-ranked ones for the remaining layers.

Simplification: we prune at the *input* with FastV's layer-K ranking instead of at layer K, so every
selector shares one execution path (the adapter's gather of kept tokens with original positions). The
ranking comes through a narrow callback `attention_fn(prompt) -> (N,)` (the evaluation wires it to
`adapter.last_token_attention(prompt, K)`); selectors never touch model internals. Because real FastV
spends full-length compute in its first K layers, tables report it at its FLOP-equivalent input ratio
(`fastv_flop_equivalent_ratio`); `fastv_ratio_for_budget` gives the inverse.

FLOP model: per decoder layer on n tokens, FastV's paper uses 4·n·d² + 2·n²·d + 2·n·d·m (d hidden,
m FFN size). With only `ratio`, `layer` and `num_layers` the cost is taken as linear in n
(projection/FFN dominated), giving (K + (L − K)·r) / L; pass `n_tokens`, `hidden_size`, `ffn_size` for
the paper's formula including the quadratic attention term (solved exactly).

`Selection.compression_ms` includes the callback's time (the first K layers' work is FastV's cost of
ranking), so compare it with care against pre-LLM selectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from cacovid.selectors.base import BaseSelector, SelectResult, check_positive_int
from cacovid.types import EncodedPrompt


def _layer_flops(n: float, d: float, m: float) -> float:
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def _check_layers(ratio: float, layer: int, num_layers: int) -> None:
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise ValueError(f"ratio must be a finite number in [0, 1], got {ratio!r}")
    if not 0 <= int(layer) <= int(num_layers) or int(num_layers) <= 0:
        raise ValueError(f"need 0 <= layer <= num_layers and num_layers > 0, got {layer}, {num_layers}")


def _solve_input_ratio(cost: float, n: float, d: float, m: float) -> float:
    """r with _layer_flops(r·n) = cost: 2d·n²r² + (4d² + 2dm)·n·r − cost = 0, positive root."""
    a, b = 2 * d * n * n, (4 * d * d + 2 * d * m) * n
    return (-b + math.sqrt(b * b + 4 * a * cost)) / (2 * a)


def fastv_flop_equivalent_ratio(
    ratio: float,
    layer: int,
    num_layers: int,
    *,
    n_tokens: int | None = None,
    hidden_size: int | None = None,
    ffn_size: int | None = None,
) -> float:
    """Input-pruning ratio whose prefill FLOPs equal FastV's (all tokens for `layer` layers, then
    `ratio` of them for the other num_layers − layer layers). Linear cost model unless n_tokens,
    hidden_size and ffn_size are all given (then FastV's per-layer formula, solved exactly)."""
    _check_layers(ratio, layer, num_layers)
    K, L = int(layer), int(num_layers)
    if n_tokens is None or hidden_size is None or ffn_size is None:
        return (K + (L - K) * ratio) / L
    n, d, m = float(n_tokens), float(hidden_size), float(ffn_size)
    cost = (K * _layer_flops(n, d, m) + (L - K) * _layer_flops(ratio * n, d, m)) / L
    return _solve_input_ratio(cost, n, d, m)


def fastv_ratio_for_budget(target_ratio: float, layer: int, num_layers: int) -> float:
    """FastV's after-layer-K ratio whose prefill FLOPs (linear model) equal input pruning at
    `target_ratio`: (L·ρ − K) / (L − K). ValueError when ρ < K/L (FastV cannot be that cheap)."""
    _check_layers(target_ratio, layer, num_layers)
    K, L = int(layer), int(num_layers)
    if K == L:
        raise ValueError("FastV pruning after the last layer saves nothing")
    r = (L * target_ratio - K) / (L - K)
    if r <= 0:
        raise ValueError(f"FastV with K={K} of {L} layers cannot match input ratio {target_ratio}")
    return r


class FastVSelector(BaseSelector):
    """Keep the video tokens with the most last-token attention at layer K (via `attention_fn`).

    Parameters: `attention_fn(prompt) -> (N,)` (required), `layer` K (2, for bookkeeping and
    `info`), `num_layers` (optional; when given `info["flop_equivalent_ratio"]` is reported).
    """

    name = "fastv"

    def __init__(
        self,
        attention_fn: Callable[[EncodedPrompt], Tensor] | None = None,
        layer: int = 2,
        num_layers: int | None = None,
    ) -> None:
        if attention_fn is None or not callable(attention_fn):
            raise ValueError(
                "fastv needs attention_fn(prompt) -> (N,) attention scores, e.g. "
                "lambda p: adapter.last_token_attention(p, 2)"
            )
        self.attention_fn = attention_fn
        self.layer = check_positive_int(layer, "layer", minimum=0)
        self.num_layers = None if num_layers is None else check_positive_int(num_layers, "num_layers")

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        n = prompt.num_video_tokens
        attn = self.attention_fn(prompt)
        if not isinstance(attn, Tensor) or attn.shape != (n,):
            raise ValueError(f"attention_fn must return a ({n},) tensor")
        attn = attn.float()
        if not bool(torch.isfinite(attn).all()):
            raise ValueError("attention_fn returned NaN or inf")
        order = torch.sort(attn, descending=True, stable=True).indices
        keep = torch.zeros(n, dtype=torch.bool, device=prompt.inputs_embeds.device)
        keep[order[:k].to(keep.device)] = True
        info: dict = {"layer": self.layer}
        if self.num_layers is not None:
            info["flop_equivalent_ratio"] = fastv_flop_equivalent_ratio(k / n, self.layer, self.num_layers)
        return keep, None, info
