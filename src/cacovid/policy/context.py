"""The cross-frame context term: where the question's match sits in space and time, and what stays put.

Why: the question-match term (`policy/question.py`) scores each video token on its own, so it keeps
everything that looks like the words of the question, including an object of the named colour that
sits in every frame and is not what the question is about. What singles out the evidence is a
conjunction across tokens: a match that *comes and goes* (unlike content that persists in the same
place), and the weaker cells around a strong match (the rim of a small object covers only part of a
cell). One copied decoder layer does not learn such comparisons from a reward or a distillation target
in affordable training (docs/experiments.md, "The decoys world"), so the policy is given them as
inputs. Per video token i at frame t, cell (h, w), with r the question-match score:

    r_i                         the match itself
    max of r over the 3×3 cells around (h, w) in frame t
    max of r over frame t       (does this frame show the named thing at all)
    cos(x_i, x at (t−1, h, w)), cos(x_i, x at (t+1, h, w))    (edge frames: with themselves)
    mean over other frames t' of cos(x_i, x at (t', h, w))    (persistence)

x: the token's input embedding. The three similarities are standardised over the video (a fixed scale
whatever the host); they depend on the input only and carry no gradient. A small MLP turns the six
features into a score added to the token's keep-minus-drop score; gradients reach the question-match
term through the three r features. Its last layer starts at zero, so a fresh term changes nothing.
Cost: O(T²·P·D) for the persistence, under the policy's one decoder layer at any real size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cacovid.ops.novelty import standardise

NUM_FEATURES = 6


def cross_frame_similarities(video: torch.Tensor) -> torch.Tensor:
    """(T, H, W, D) video embeddings → (T·H·W, 3) standardised [previous, next, persistence] cosines."""
    if video.dim() != 4 or min(video.shape) == 0:
        raise ValueError(f"expected a non-empty (T, H, W, D) video, got {tuple(video.shape)}")
    T, H, W, D = video.shape
    x = F.normalize(video.float().reshape(T, H * W, D), dim=-1)
    if T == 1:
        return torch.zeros(H * W, 3, device=video.device)
    previous = (x * torch.cat([x[:1], x[:-1]])).sum(-1)  # (T, P)
    following = (x * torch.cat([x[1:], x[-1:]])).sum(-1)
    same_cell = torch.einsum("tpd,spd->tp", x, x)  # Σ over frames s of cos(x_t, x_s), self included
    persistence = (same_cell - (x * x).sum(-1)) / (T - 1)
    feats = [standardise(f).reshape(-1) for f in (previous, following, persistence)]
    return torch.stack(feats, dim=1)


class CrossFrameContext(nn.Module):
    """(N,) match scores r on a (T, H, W) grid + (N, 3) similarities → (N,) context scores."""

    def __init__(self, width: int, generator: torch.Generator) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"the context term needs a positive width, got {width}")
        self.hidden = nn.Linear(NUM_FEATURES, width)
        self.out = nn.Linear(width, 1)
        with torch.no_grad():
            bound = (6.0 / (NUM_FEATURES + width)) ** 0.5
            self.hidden.weight.uniform_(-bound, bound, generator=generator)
            self.hidden.bias.zero_()
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(
        self, match: torch.Tensor, grid: tuple[int, int, int], similarities: torch.Tensor
    ) -> torch.Tensor:
        T, H, W = grid
        N = T * H * W
        if match.shape != (N,) or similarities.shape != (N, 3):
            raise ValueError(
                f"expected ({N},) match scores and ({N}, 3) similarities for a {grid} grid, got "
                f"{tuple(match.shape)} and {tuple(similarities.shape)}"
            )
        r = match.reshape(T, 1, H, W)
        around = F.max_pool2d(r, kernel_size=3, stride=1, padding=1).reshape(N)
        in_frame = r.reshape(T, H * W).amax(dim=1, keepdim=True).expand(T, H * W).reshape(N)
        feats = torch.cat([torch.stack([match, around, in_frame], dim=1), similarities.to(match)], dim=1)
        return self.out(F.silu(self.hidden(feats))).squeeze(1)
