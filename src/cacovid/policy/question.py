"""The question-match term: a dedicated cross-attention score from each video token to the question.

Why: the policy's copied first layer can, in principle, let every video token read the question
(its attention is bidirectional), but that layer was trained causally inside the host, where video
tokens never attended to the text after them, and learning that path from a reward or a distillation
target is slow (docs/experiments.md, "The decoys world"). This module gives the path directly:

    c_ij = (W_q n(v_i)) · (W_k n(q_j)) / √d          v_i: video token i, q_j: question token j
    r_i  = (1/β) · log Σ_j exp(β · (c_ij − mean_i' c_i'j))

on the host's input embeddings (n: RMSNorm, d: `question_match_dim`, β = 4: a soft maximum over the
question's tokens). Centring each question token's column on the video's mean leaves only the words
some video tokens match *more* than others, so template words and special tokens fall away. r is
added to the token's keep-minus-drop score. W_k starts at zero (r = 0 for every token, so a fresh
policy scores exactly as without the term) and W_q with Glorot weights, as low-rank adapters are
started, so the first gradient reaches W_k and the term grows from nothing. With `init="query"`,
W_k starts equal to W_q instead: each video token then scores by how much it resembles some question
word more than the video's average token does, a label-free prior for answer-reward training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SHARPNESS = 4.0


class QuestionMatch(nn.Module):
    """(N, D) video embeddings and (Q, D) question embeddings → (N,) match scores r."""

    def __init__(
        self, hidden: int, dim: int, generator: torch.Generator, eps: float = 1e-6, init: str = "zero"
    ) -> None:
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ValueError(f"question match needs positive sizes, got hidden {hidden}, dim {dim}")
        self.dim = dim
        self.norm = nn.RMSNorm(hidden, eps=eps)
        self.query = nn.Linear(hidden, dim, bias=False)
        self.key = nn.Linear(hidden, dim, bias=False)
        with torch.no_grad():
            bound = (6.0 / (hidden + dim)) ** 0.5
            self.query.weight.uniform_(-bound, bound, generator=generator)
            if init == "query":  # a match of a video token with a question word it resembles
                self.key.weight.copy_(self.query.weight)
            else:
                self.key.weight.zero_()

    def forward(self, video: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        if video.dim() != 2 or question.dim() != 2 or video.shape[1] != question.shape[1]:
            raise ValueError(
                f"expected (N, D) video and (Q, D) question embeddings, got {tuple(video.shape)} "
                f"and {tuple(question.shape)}"
            )
        scores = self.query(self.norm(video)) @ self.key(self.norm(question)).T / math.sqrt(self.dim)
        centred = scores - scores.mean(dim=0, keepdim=True)  # (N, Q)
        return (
            torch.logsumexp(SHARPNESS * centred, dim=1) / SHARPNESS - math.log(question.shape[0]) / SHARPNESS
        )
