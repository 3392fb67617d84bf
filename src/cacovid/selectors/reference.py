"""Reference selectors that use no learned or feature signal: random, uniform and the oracle.

- `random`: K tokens drawn uniformly without replacement. All randomness comes from the `generator`
  passed to `select`; without one, a generator seeded with the selector's `seed` (default 0) is used,
  so repeated runs are reproducible.
- `uniform`: K tokens evenly spaced over the (t, h, w) order (bin centres, `ops.uniform_indices`):
  the neutral baseline every method must beat.
- `oracle`: the ground-truth answer-bearing tokens (`prompt.evidence_mask`) first — an evenly spread
  subset of them when the evidence alone exceeds the budget — then an even fill of the other tokens
  up to the budget (docs/result-files.md, reference rows). Only defined where evidence is known.
"""

from __future__ import annotations

import torch

from cacovid.ops.fill import even_fill
from cacovid.selectors.base import BaseSelector, SelectResult
from cacovid.types import EncodedPrompt


class RandomSelector(BaseSelector):
    """Uniformly random K of N tokens. Parameter: `seed` for the default generator."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        n = prompt.num_video_tokens
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(n, generator=generator, device=generator.device)
        keep = torch.zeros(n, dtype=torch.bool, device=prompt.inputs_embeds.device)
        keep[perm[:k].to(keep.device)] = True
        return keep, None, {}


class UniformSelector(BaseSelector):
    """K tokens evenly spaced over the (t, h, w) order; no parameters."""

    name = "uniform"

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        allowed = torch.ones(prompt.num_video_tokens, dtype=torch.bool, device=prompt.inputs_embeds.device)
        return even_fill(allowed, k), None, {}


class OracleSelector(BaseSelector):
    """Ground-truth evidence first, then an even fill; ValueError if the prompt has no evidence."""

    name = "oracle"

    def _select(self, prompt: EncodedPrompt, k: int, generator: torch.Generator | None) -> SelectResult:
        if prompt.evidence_mask is None:
            raise ValueError("oracle selection needs a prompt with an evidence_mask (ground truth)")
        evidence = prompt.evidence_mask.to(torch.bool)
        n_ev = int(evidence.sum())
        if n_ev >= k:
            return even_fill(evidence, k), None, {"evidence_kept": k, "evidence_total": n_ev}
        keep = evidence | even_fill(~evidence, k - n_ev)
        return keep, None, {"evidence_kept": n_ev, "evidence_total": n_ev}
