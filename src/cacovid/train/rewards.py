"""Reward functions (method.md §4 step 3, §6): plain, pluggable, one number per rollout.

Text rewards score a generated answer against the item's solution: multiple choice by option letter,
numeric by value, free text by ROUGE-L F. The dense reward skips generation: it asks the frozen model
for the log-likelihood of every candidate answer in one teacher-forced pass and returns the
probability of the correct one (normalised per item, so it lies in [0, 1] like accuracy).

`RolloutReward` is what the trainer calls: (adapter, rows, item) → (G,) rewards, with all G rollouts
of an iteration in **one** batched adapter call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from cacovid.types import QAItem

if TYPE_CHECKING:
    from cacovid.models.base import Row, VideoLLM

LETTERS = "ABCDEFGH"
TextReward = Callable[[str, QAItem], float]
RolloutReward = Callable[["VideoLLM", Sequence["Row"], QAItem], torch.Tensor]

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def _answer_span(text: str) -> str:
    """The part of a generation that holds the answer: inside <answer>…</answer> when present."""
    m = _ANSWER_TAG.findall(text or "")
    return m[-1] if m else (text or "")


# ---- multiple choice ------------------------------------------------------------------------
def parse_option_letter(text: str, options: Sequence[str] = ()) -> str | None:
    """The option letter a generated answer commits to, or None.

    Tried in order: "answer is X" / "answer: X" / "option X"; a leading "X", "(X)", "X." or "X)";
    a single distinct standalone capital letter among the valid ones; the one option whose text
    appears in the answer. Valid letters are the first len(options) of A–H (all of A–H if no options).
    """
    valid = LETTERS[: len(options)] if options else LETTERS
    span = _answer_span(text).strip()
    if not span:
        return None
    cls = f"[{valid}{valid.lower()}]"
    # Capital letters only here: "the answer is a red ball" must not read as option A.
    m = re.search(rf"(?i:answer\s*(?:is|:)|option)\s*:?\s*[\(\[]?([{valid}])[\)\]]?(?![A-Za-z])", span)
    if m:
        return m.group(1).upper()
    m = re.match(rf"\s*[\(\[]?({cls})(?:[\)\]\.:,]|\s|$)", span)
    if m and (m.group(1).isupper() or len(span.strip()) <= 3):
        return m.group(1).upper()
    singles = set(re.findall(rf"(?<![A-Za-z])([{valid}])(?![A-Za-z])", span))
    if len(singles) == 1:
        return singles.pop()
    low = span.lower()
    hits = [i for i, o in enumerate(options) if o and re.search(rf"\b{re.escape(o.lower())}\b", low)]
    if len(hits) == 1:
        return LETTERS[hits[0]]
    return None


def multiple_choice_reward(text: str, item: QAItem) -> float:
    """1.0 if the generated option letter equals the item's solution letter, else 0.0."""
    letter = parse_option_letter(text, item.options)
    return float(letter is not None and letter == item.solution.strip().upper()[:1])


# ---- numbers --------------------------------------------------------------------------------
def parse_number(text: str) -> float | None:
    """The first number in the answer span ("1,024", "-3.5", "2e3"), or None."""
    m = _NUMBER.search(_answer_span(text))
    if not m:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def numeric_reward(text: str, item: QAItem, *, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> float:
    """1.0 if the answer's number equals the solution's number (within a tiny tolerance)."""
    got, want = parse_number(text), parse_number(item.solution)
    if got is None or want is None:
        return 0.0
    return float(math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol))


def regression_reward(text: str, item: QAItem) -> float:
    """Relative accuracy 1 − |got − want| / |want|, clipped to [0, 1] (exact match when want = 0)."""
    got, want = parse_number(text), parse_number(item.solution)
    if got is None or want is None:
        return 0.0
    if want == 0:
        return float(got == 0)
    return max(0.0, 1.0 - abs(got - want) / abs(want))


# ---- free text ------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l_f(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two texts: longest common word subsequence, lowercased, punctuation ignored."""
    a, b = _words(prediction), _words(reference)
    if not a or not b:
        return float(a == b)
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def free_text_reward(text: str, item: QAItem) -> float:
    return rouge_l_f(_answer_span(text), item.solution)


def accuracy_reward(text: str, item: QAItem) -> float:
    """Correctness by the item's problem type (Video-R1 names): the default training reward."""
    kind = (item.problem_type or "").lower()
    if kind in ("multiple choice", "multiple_choice", "mc"):
        return multiple_choice_reward(text, item)
    if kind in ("numerical", "numeric", "number"):
        return numeric_reward(text, item)
    if kind == "regression":
        return regression_reward(text, item)
    return free_text_reward(text, item)


TEXT_REWARDS: dict[str, TextReward] = {
    "accuracy": accuracy_reward,
    "mc": multiple_choice_reward,
    "numeric": numeric_reward,
    "regression": regression_reward,
    "rouge": free_text_reward,
}


# ---- rollout rewards (what the trainer calls) -----------------------------------------------
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
