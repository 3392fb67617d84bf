"""Rollout rewards (docs/method.md §4 step 3, §6): what the trainer calls, one number per rollout.

A reward function is (adapter, rows, item, max_new_tokens) → (G,) rewards, with all G rollouts of an
iteration in **one** batched adapter call. `REWARDS` holds them by name (`TrainConfig.reward`):
- the text rewards (`cacovid.scoring`: option letter, number, ROUGE-L F) score greedily generated
  answers;
- "dense" skips generation: one teacher-forced pass gives the log-likelihood of every candidate
  answer, and the reward is the probability of the correct one;
- "logodds" is the same pass read as the log-odds of the correct option against the others, which
  keeps separating rollouts when p(correct) is near 1 or 0, where the probability saturates;
- "logodds_contrast" is "logodds" minus how far the same kept tokens lift the answer to another
  question about the same video (`QAItem.counterfactual`) above chance: it pays for keeping what
  answers *this* question and charges for keeping what answers another one.
Each entry also says how its reward reads as a probability of answering correctly (`Reward.success`),
which the adaptive training retention follows. `TrainConfig.reward` may instead name any function
`pkg.mod:fn` with the (adapter, rows, item) signature of `RolloutReward`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cacovid.scoring import LETTERS, TEXT_REWARDS, TextReward
from cacovid.types import QAItem

if TYPE_CHECKING:
    from cacovid.models.base import Row, VideoLLM

__all__ = [
    "REWARDS",
    "Reward",
    "RolloutReward",
    "dense_reward",
    "logodds_contrast_reward",
    "logodds_reward",
    "reward_names",
    "rollout_reward",
    "text_rollout_reward",
]

RolloutReward = Callable[["VideoLLM", Sequence["Row"], QAItem], torch.Tensor]
LOGODDS_CLAMP = 12.0  # |log-odds| beyond this carries no more signal and only adds variance


def text_rollout_reward(fn: TextReward, max_new_tokens: int = 4) -> RolloutReward:
    """Wrap a text reward: greedy-generate all rows in one batched call, score each answer."""

    def reward(adapter: VideoLLM, rows: Sequence[Row], item: QAItem) -> torch.Tensor:
        texts = adapter.generate_rows(rows, max_new_tokens=max_new_tokens)
        return torch.tensor([fn(t, item) for t in texts], dtype=torch.float32)

    reward.__name__ = f"text:{getattr(fn, '__name__', 'reward')}"
    return reward


def _option_logprobs(adapter: VideoLLM, rows: Sequence[Row], item: QAItem) -> tuple[torch.Tensor, int]:
    """(G, n_options) candidate log-likelihoods from one teacher-forced pass, and the correct index."""
    letters = list(LETTERS[: len(item.options)])
    want = item.solution.strip().upper()[:1]
    if want not in letters:
        raise ValueError(f"item {item.id}: solution {item.solution!r} is not one of {letters}")
    candidates = list(item.options) if item.answer_format == "option" else letters
    return adapter.answer_logprobs_rows(rows, candidates).float(), letters.index(want)


def dense_reward(
    adapter: VideoLLM, rows: Sequence[Row], item: QAItem, max_new_tokens: int = 4
) -> torch.Tensor:
    """(G,) probability of the correct answer from one teacher-forced pass (no generation).

    Multiple choice: softmax over the candidates' log-likelihoods, at the correct one; the
    candidates are the option letters, or the option texts when the item asks to be answered with
    the option (`QAItem.answer_format`).
    Otherwise: the solution's per-token probability exp(log p / n_tokens).
    """
    if item.problem_type == "multiple choice" and item.options:
        lp, correct = _option_logprobs(adapter, rows, item)
        return torch.softmax(lp, dim=-1)[:, correct]
    lp = adapter.answer_logprobs_rows(rows, [item.solution]).float()[:, 0]  # (G,)
    n_tok = max(1, len(adapter.tokenizer(item.solution, add_special_tokens=False)["input_ids"]))
    return torch.exp(lp / n_tok)


def logodds_reward(
    adapter: VideoLLM, rows: Sequence[Row], item: QAItem, max_new_tokens: int = 4
) -> torch.Tensor:
    """(G,) log-odds of the correct option against the others, log p_c − log Σ_{o≠c} p_o, clamped to
    ±`LOGODDS_CLAMP` (multiple choice only; one teacher-forced pass, like `dense_reward`).

    σ(reward) is the dense reward's p(correct), so the two rank rollouts alike; the log-odds keeps a
    usable difference between rollouts where p is 0.98 and 0.999, or 0.01 and 0.001.
    """
    if item.problem_type != "multiple choice" or not item.options:
        raise ValueError(f"item {item.id}: the log-odds reward needs a multiple-choice item")
    lp, c = _option_logprobs(adapter, rows, item)
    others = torch.cat([lp[:, :c], lp[:, c + 1 :]], dim=1)
    return (lp[:, c] - torch.logsumexp(others, dim=1)).clamp(-LOGODDS_CLAMP, LOGODDS_CLAMP)


def logodds_contrast_reward(
    adapter: VideoLLM, rows: Sequence[Row], item: QAItem, max_new_tokens: int = 4
) -> torch.Tensor:
    """(G,) `logodds_reward` of the item minus the counterfactual question's log-odds lift above
    chance, each rollout's keep mask applied to the counterfactual prompt (two teacher-forced passes).

    Why: the answer alone does not charge for keeping objects the question does not ask about; where
    they do not mislead the model, answer-only RL keeps more of them the longer it trains. Another
    question about the same video, with its answer, names what a selection for *this* question
    should leave out, and reading it needs no evidence annotation. Chance log-odds, log 1/(n−1) for
    n options, is subtracted so that a selection that tells nothing about the other question costs
    nothing; for such a selection σ(reward) is the probability of answering the item's own question,
    which the retention control reads. The lift is not clipped at chance: without the other
    object's evidence the model is mostly below chance on its question, and keeping part of that
    evidence moves it towards chance; charging only above chance let the other objects back in
    (docs/experiments.md, "Charging for what answers another question"). Items without a
    counterfactual question get the plain log-odds reward.
    """
    own = logodds_reward(adapter, rows, item)
    other = item.counterfactual
    if other is None:
        return own
    if other.problem_type != "multiple choice" or len(other.options) < 2:
        raise ValueError(f"item {item.id}: the counterfactual question must be multiple choice")
    # The same video: reuse the item's vision-tower features (the dearest part of encoding).
    features = adapter.placeholder_features(rows[0][0]) if rows and item.shows_same_video(other) else None
    prompt = adapter.encode_item(other, features=features)
    if rows and prompt.num_video_tokens != rows[0][1].numel():
        raise ValueError(
            f"item {item.id}: the counterfactual prompt has {prompt.num_video_tokens} video "
            f"tokens, the item's keep masks {rows[0][1].numel()}; it must show the same video"
        )
    lift = logodds_reward(adapter, [(prompt, keep, extra) for _, keep, extra in rows], other)
    chance = -math.log(len(other.options) - 1)
    return own - (lift - chance)


def _generated(fn: TextReward) -> Callable[..., torch.Tensor]:
    """A table entry for a text reward: generates `max_new_tokens` per rollout, then scores the text."""

    def reward(adapter: VideoLLM, rows: Sequence[Row], item: QAItem, max_new_tokens: int = 4) -> torch.Tensor:
        return text_rollout_reward(fn, max_new_tokens)(adapter, rows, item)

    reward.__name__ = f"text:{getattr(fn, '__name__', 'reward')}"
    return reward


def _identity(rewards: torch.Tensor) -> torch.Tensor:
    return rewards


@dataclass(frozen=True)
class Reward:
    """One entry of `REWARDS`: `fn(adapter, rows, item, max_new_tokens)` → (G,) rewards, and
    `success(rewards)` → (G,) probability of a correct answer (what retention control reads)."""

    fn: Callable[..., torch.Tensor]
    success: Callable[[torch.Tensor], torch.Tensor] = _identity


# Rollout rewards by name (`TrainConfig.reward`). Adding one: a function above, an entry here, a test
# in tests/test_train_rewards.py.
REWARDS: dict[str, Reward] = {
    **{name: Reward(_generated(fn)) for name, fn in TEXT_REWARDS.items()},
    "dense": Reward(dense_reward),
    "logodds": Reward(logodds_reward, success=torch.sigmoid),
    "logodds_contrast": Reward(logodds_contrast_reward, success=torch.sigmoid),
}


def reward_names() -> list[str]:
    return list(REWARDS)


def reward_spec(name: str) -> Reward:
    """The table entry of `name`, or a `pkg.mod:fn` import path taken as a (adapter, rows, item)
    reward whose values are probabilities of success."""
    if name in REWARDS:
        return REWARDS[name]
    if ":" not in name:
        raise ValueError(f"unknown reward {name!r}; choose from {reward_names()} or pkg.mod:fn")
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward {name!r}: cannot import {attr} from {module} ({e})") from e
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable")
    return Reward(lambda adapter, rows, item, max_new_tokens=4: fn(adapter, rows, item))


def rollout_reward(name: str, max_new_tokens: int = 4) -> RolloutReward:
    """The named rollout reward as an (adapter, rows, item) function, answers `max_new_tokens` long."""
    spec = reward_spec(name)

    def reward(adapter: VideoLLM, rows: Sequence[Row], item: QAItem) -> torch.Tensor:
        return spec.fn(adapter, rows, item, max_new_tokens=max_new_tokens)

    reward.__name__ = getattr(spec.fn, "__name__", name)
    return reward
