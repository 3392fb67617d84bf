"""CaCoVID behind the `Selector` protocol, so evaluation treats it exactly like every baseline."""

from __future__ import annotations

import time

import torch

from cacovid.policy.network import CaCoVIDPolicy
from cacovid.policy.select import FILL_RULES, budgeted_select
from cacovid.types import EncodedPrompt, Selection


class CaCoVIDSelector:
    """Policy scores → budgeted selection (docs/method.md §3).

    `compression_ms` covers the policy forward pass and the selection, i.e. everything CaCoVID adds
    before the language model. The policy's scores are deterministic, so `generator` is unused.
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
        self.policy = policy
        self.alpha = float(alpha)
        self.cap = cap
        self.fill = fill

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
        keep = budgeted_select(
            out.token_scores.reshape(prompt.num_frames, prompt.tokens_per_frame),
            out.frame_scores,
            ratio,
            alpha=self.alpha,
            cap=self.cap,
            fill=self.fill,
        ).to(prompt.video_positions.device)
        ms = (time.perf_counter() - start) * 1000.0
        return Selection(keep=keep, compression_ms=ms, info={"alpha": self.alpha, "fill": self.fill})
