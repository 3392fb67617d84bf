"""Rollout rewards (docs/method.md §4 step 3, §6): what the trainer calls, one number per rollout.

`RolloutReward` is (adapter, rows, item) → (G,) rewards, with all G rollouts of an iteration in
**one** batched adapter call. A text reward (`cacovid.scoring`: option letter, number, ROUGE-L F)
scores greedily generated answers. The dense reward skips generation: it asks the frozen model for
the log-likelihood of every candidate answer in one teacher-forced pass and returns the probability
of the correct one (normalised per item, so it lies in [0, 1] like accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from cacovid.scoring import LETTERS, TEXT_REWARDS, TextReward
from cacovid.types import QAItem

if TYPE_CHECKING:
    from cacovid.models.base import Row, VideoLLM

__all__ = ["RolloutReward", "dense_reward", "rollout_reward", "text_rollout_reward"]

RolloutReward = Callable[["VideoLLM", Sequence["Row"], QAItem], torch.Tensor]


def text_rollout_reward(fn: TextReward, max_new_tokens: int = 4) -> RolloutReward:
    """Wrap a text reward: greedy-generate all rows in one batched call, score each answer."""

    def reward(adapter: VideoLLM, rows: Sequence[Row], item: QAItem) -> torch.Tensor:
        texts = adapter.generate_rows(rows, max_new_tokens=max_new_tokens)
        return torch.tensor([fn(t, item) for t in texts], dtype=torch.float32)

    reward.__name__ = f"text:{getattr(fn, '__name__', 'reward')}"
    return reward


def dense_reward(adapter: VideoLLM, rows: Sequence[Row], item: QAItem) -> torch.Tensor:
    """(G,) probability of the correct answer from one teacher-forced pass (no generation).

    Multiple choice: softmax over the candidates' log-likelihoods, at the correct one; the
    candidates are the option letters, or the option texts when the item asks to be answered with
    the option (`QAItem.answer_format`).
    Otherwise: the solution's per-token probability exp(log p / n_tokens).
    """
    if item.problem_type == "multiple choice" and item.options:
        letters = list(LETTERS[: len(item.options)])
        want = item.solution.strip().upper()[:1]
        if want not in letters:
            raise ValueError(f"item {item.id}: solution {item.solution!r} is not one of {letters}")
        candidates = list(item.options) if item.answer_format == "option" else letters
        lp = adapter.answer_logprobs_rows(rows, candidates).float()  # (G, n_options)
        return torch.softmax(lp, dim=-1)[:, letters.index(want)]
    lp = adapter.answer_logprobs_rows(rows, [item.solution]).float()[:, 0]  # (G,)
    n_tok = max(1, len(adapter.tokenizer(item.solution, add_special_tokens=False)["input_ids"]))
    return torch.exp(lp / n_tok)


def rollout_reward(name: str, max_new_tokens: int = 4) -> RolloutReward:
    """The named rollout reward: "dense" or one of the text rewards (generated answers)."""
    if name == "dense":
        return dense_reward
    if name not in TEXT_REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose from {['dense', *TEXT_REWARDS]}")
    return text_rollout_reward(TEXT_REWARDS[name], max_new_tokens)
