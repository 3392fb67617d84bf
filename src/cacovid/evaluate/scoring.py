"""Score one generated answer against its item, with the parsed answer kept for the record.

Why: evaluation must score exactly as training rewards do (the same option-letter and number parsers,
`cacovid.scoring`), but it also records *what* was parsed and whether parsing failed, so a table can
tell "the model chose the wrong option" from "the model said nothing we could read".
"""

from __future__ import annotations

from dataclasses import dataclass

from cacovid.scoring import (
    free_text_reward,
    numeric_reward,
    parse_number,
    parse_option_letter,
    regression_reward,
)
from cacovid.types import QAItem

_MC = ("multiple choice", "multiple_choice", "mc")
_NUMERIC = ("numerical", "numeric", "number")


@dataclass
class Scored:
    """`score` in [0, 1] (exact 0/1 except free text and regression), the parsed answer (None when
    nothing could be parsed) and an error message for an unparsable answer."""

    score: float
    parsed: str | None
    error: str | None = None

    @property
    def correct(self) -> int:
        return int(self.score >= 1.0 - 1e-9)


def score_answer(text: str, item: QAItem) -> Scored:
    """Score `text` (a generated answer) for `item` by its problem type."""
    kind = (item.problem_type or "").lower()
    if kind in _MC:
        letter = parse_option_letter(text, item.options)
        if letter is None:
            return Scored(0.0, None, f"unparsable answer {text[:80]!r}: names no option (letter or text)")
        return Scored(float(letter == item.solution.strip().upper()[:1]), letter)
    if kind in _NUMERIC or kind == "regression":
        got, want = parse_number(text), parse_number(item.solution)
        if got is None:
            return Scored(0.0, None, f"unparsable answer {text[:80]!r}: no number")
        if want is None:
            raise ValueError(f"item {item.id}: solution {item.solution!r} holds no number")
        if kind == "regression":
            return Scored(regression_reward(text, item), repr(got))
        return Scored(numeric_reward(text, item), repr(got))
    return Scored(free_text_reward(text, item), text)
