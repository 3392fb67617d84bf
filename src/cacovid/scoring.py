"""Scoring a generated answer against its item's solution: the text rewards of training and evaluation.

Multiple choice by option letter, numeric by value, regression by relative accuracy, free text by
ROUGE-L F (docs/method.md §4 step 3, §6). Training (`cacovid.train.rewards`, `cacovid.train.validation`)
and evaluation (`cacovid.evaluate.scoring`) both score through these functions, so a reported
accuracy is the quantity the policy was trained on. Plain text in, one number out: no model needed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from cacovid.types import QAItem

__all__ = [
    "LETTERS",
    "TEXT_REWARDS",
    "TextReward",
    "accuracy_reward",
    "free_text_reward",
    "multiple_choice_reward",
    "numeric_reward",
    "parse_number",
    "parse_option_letter",
    "regression_reward",
    "rouge_l_f",
]

LETTERS = "ABCDEFGH"
TextReward = Callable[[str, QAItem], float]

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
    # Options often end in a full stop ("Opened the door."); match the words, not the stop.
    texts = [o.lower().strip().rstrip(".").strip() for o in options]
    hits = [i for i, o in enumerate(texts) if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", low)]
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
