"""Choose a trained policy's inference settings (α, cap, fill; docs/method.md §3) on validation items.

It lives in `train/`, above `policy/`, because it runs the training-time validation
(`cacovid.train.validation.validate_selector`) over the policy's selections.

The defaults of docs/method.md §3 (α = 0.5, c = 1.5·ρ, even fill) are a reasonable start for any
policy, but the best split between the importance share and the fill depends on how good the
policy's scores are: a sharp policy wants α near 1, a weak one wants more fill. The choice is made
on validation data, never on the test split, and saved as `selection.json` beside the policy, which
evaluation reads (`cacovid.policy.settings.selection_options`), so a shipped policy is run the way it
was tuned. Reading and writing the file live in the policy layer (`cacovid.policy.settings`);
`write_selection` is re-exported here for the trainer and `cacovid tune-selection`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cacovid.policy.select import FILL_RULES
from cacovid.policy.selector import CaCoVIDSelector
from cacovid.policy.settings import write_selection
from cacovid.train.validation import validate_selector
from cacovid.types import EncodedPrompt, QAItem

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM
    from cacovid.policy.network import CaCoVIDPolicy

__all__ = ["DEFAULT_ALPHAS", "DEFAULT_CAPS", "TUNING_CRITERIA", "tune_selection", "write_selection"]

# What `tune_selection` picks by: evidence recall among the near-best accuracies, or accuracy alone.
TUNING_CRITERIA: tuple[str, ...] = ("recall", "accuracy")

# α = 0 with the score fill spends the whole budget on the best token scores anywhere, ignoring the
# frame head: the right choice when the frame head ranks frames worse than the token head does.
DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0)
# None is c = 1.5·ρ (docs/method.md §3); 1.0 lets a frame take as much of the importance share as its
# score asks.
DEFAULT_CAPS: tuple[float | None, ...] = (None, 1.0)


def tune_selection(
    adapter: VideoLLM,
    policy: CaCoVIDPolicy,
    prompts: Sequence[EncodedPrompt],
    items: Sequence[QAItem],
    ratios: Sequence[float],
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    caps: Sequence[float | None] = DEFAULT_CAPS,
    fills: Sequence[str] = FILL_RULES,
    batch_size: int = 16,
    tolerance: float | None = None,
    by: str = "recall",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(best options, one row per setting): with `by` "recall", the highest evidence recall among the
    settings whose mean accuracy over `ratios` lies within `tolerance` of the best (ties: the more
    accurate); with `by` "accuracy", the most accurate setting, read off the answers alone (ties: the
    first tried, in the order α = 0, 0.5, 0.75, 1), for data without evidence annotations and for
    policies that must not be chosen by them.

    Why not simply the most accurate: on the usual 90 validation items the settings' accuracies
    differ by less than their standard error, so a strict maximum picks noise; the recall separates
    them far more (e.g. 0.67 against 0.86 at equal accuracy) and it is what carries over to harder
    items. `tolerance` None is one standard error of the best accuracy over the n = items × ratios
    answers, sqrt(p(1 − p) / n); 0 keeps the strict maximum.

    α = 1 leaves nothing to fill, so it is tried with one fill rule only; α = 0 leaves no frame
    shares, so it is tried once, with the score fill (with the even fill it would be policy-free).
    """
    if by not in TUNING_CRITERIA:
        raise ValueError(f"by must be one of {TUNING_CRITERIA}, got {by!r}")
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if not prompts or len(prompts) != len(items):
        raise ValueError(f"need matching, non-empty prompts and items, got {len(prompts)} and {len(items)}")
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise ValueError(f"ratios must be a non-empty list in (0, 1], got {list(ratios)}")
    table: list[dict[str, Any]] = []
    for alpha, cap, fill in itertools.product(alphas, caps, fills):
        if alpha == 1.0 and fill != fills[0]:
            continue
        if alpha == 0.0 and (fill != "score" or cap != caps[0]):
            continue
        selector = CaCoVIDSelector(policy, alpha=alpha, cap=cap, fill=fill)
        rows = validate_selector(adapter, selector, prompts, items, ratios, batch_size=batch_size)
        row: dict[str, Any] = {"alpha": alpha, "cap": cap, "fill": fill}
        row["accuracy"] = sum(r["accuracy"] for r in rows) / len(rows)
        recalls = [r["evidence_recall"] for r in rows if "evidence_recall" in r]
        row["evidence_recall"] = sum(recalls) / len(recalls) if recalls else None
        row["per_ratio"] = rows
        table.append(row)
    top = max(r["accuracy"] for r in table)
    if by == "accuracy":
        best = next(r for r in table if r["accuracy"] == top)
        return _options(best), table
    if tolerance is None:
        tolerance = math.sqrt(top * (1.0 - top) / (len(items) * len(ratios)))
    close = [r for r in table if r["accuracy"] >= top - tolerance - 1e-12]
    best = max(close, key=lambda r: (r["evidence_recall"] or 0.0, r["accuracy"]))
    return _options(best), table


def _options(row: dict[str, Any]) -> dict[str, Any]:
    options = {"alpha": row["alpha"], "fill": row["fill"]}
    if row["cap"] is not None:
        options["cap"] = row["cap"]
    return options
