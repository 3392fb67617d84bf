"""CaCoVID behind the `Selector` protocol, so evaluation treats it exactly like every baseline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cacovid.models.loading import as_video_llm
from cacovid.policy.layer_attention import apply_layer_attention
from cacovid.policy.network import CaCoVIDPolicy
from cacovid.policy.release import release_select
from cacovid.policy.select import FILL_RULES, budgeted_select
from cacovid.policy.settings import selection_options
from cacovid.types import EncodedPrompt, Selection

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM


class CaCoVIDSelector:
    """Policy scores → budgeted selection (docs/method.md §3).

    `compression_ms` covers the policy forward pass and the selection, i.e. everything CaCoVID adds
    before the language model. The policy's scores are deterministic, so `generator` is unused.
    A policy whose config asks for the release's behaviour (`layer_attention="causal"`,
    `selection_rule="release"`; docs/method.md §8) is run that way.
    """

    name = "cacovid"

    def __init__(
        self,
        policy: CaCoVIDPolicy,
        alpha: float = 0.5,
        cap: float | None = None,
        fill: str = "even",
    ) -> None:
        if not isinstance(policy, CaCoVIDPolicy):
            raise ValueError(f"policy must be a CaCoVIDPolicy, got {type(policy).__name__}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if cap is not None and not cap > 0:
            raise ValueError(f"cap must be positive, got {cap}")
        if fill not in FILL_RULES:
            raise ValueError(f"fill must be one of {FILL_RULES}, got {fill!r}")
        if policy.config.selection_rule == "release" and fill != "even":
            raise ValueError(
                f"fill={fill!r}: a policy with selection_rule 'release' fills the rest of the budget "
                "the release's way (evenly spaced); use fill='even'"
            )
        apply_layer_attention(policy)
        self.policy = policy
        self.alpha = float(alpha)
        self.cap = cap
        self.fill = fill

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        host: VideoLLM | nn.Module | None = None,
        *,
        device: str | torch.device | None = None,
        **overrides: Any,
    ) -> CaCoVIDSelector:
        """A selector for a saved policy folder, run with the selection settings saved beside it
        (`selection.json`, `cacovid.policy.settings`); keyword `overrides` (alpha, cap, fill) win.

        `host` (an adapter or a plain transformers video LLM) is checked against the policy (family
        and layer structure) and lends its layer classes; the policy goes to the host's device unless
        `device` says otherwise.
        """
        adapter = as_video_llm(host) if host is not None else None
        policy = CaCoVIDPolicy.from_pretrained(directory, host=adapter)
        target = device if device is not None else (adapter.device if adapter is not None else None)
        if target is not None:
            policy.to(target)
        return cls(policy, **{**selection_options(directory), **overrides})

    def select(
        self, prompt: EncodedPrompt, ratio: float, *, generator: torch.Generator | None = None
    ) -> Selection:
        start = time.perf_counter()
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                out = self.policy(prompt)
        finally:
            self.policy.train(was_training)
        if self.policy.config.selection_rule == "release":
            keep = release_select(
                out.token_scores, out.frame_scores, ratio, prompt.video_grid, alpha=self.alpha, cap=self.cap
            )
        else:
            keep = budgeted_select(
                out.token_scores.reshape(prompt.num_frames, prompt.tokens_per_frame),
                out.frame_scores,
                ratio,
                alpha=self.alpha,
                cap=self.cap,
                fill=self.fill,
            )
        keep = keep.to(prompt.video_positions.device)
        ms = (time.perf_counter() - start) * 1000.0
        return Selection(keep=keep, compression_ms=ms, info={"alpha": self.alpha, "fill": self.fill})
