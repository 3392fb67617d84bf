"""Paired differences between two methods on the same items: what a comparison of selectors needs.

Why paired: two selectors evaluated on the same 400 items share each item's difficulty, so the spread
of their per-item score differences is far smaller than either accuracy's own standard error. The
difference d_i = score_A(i) − score_B(i) over the items both answered (same item id, same ratio) gives
the mean difference and its standard error sqrt(var(d) / n) (sample variance). A and B may come from
two results directories (e.g. two policies evaluated on the same items with `cacovid eval`).

    >>> from cacovid.evaluate.paired import paired_difference
    >>> a = [{"item_id": "x", "method": "cacovid", "ratio": 0.1, "correct": True},
    ...      {"item_id": "y", "method": "cacovid", "ratio": 0.1, "correct": True}]
    >>> b = [{"item_id": "x", "method": "relevance", "ratio": 0.1, "correct": False},
    ...      {"item_id": "y", "method": "relevance", "ratio": 0.1, "correct": True}]
    >>> paired_difference(a, "cacovid", b, "relevance", 0.1)["difference"]
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from cacovid.evaluate.records import latest_rows, ratio_key

__all__ = ["paired_difference"]


def _scores(rows: Iterable[dict[str, Any]], method: str, ratio: float) -> dict[str, float]:
    """item id → score (1/0 for correctness, or the row's `score`) of one method at one ratio."""
    out: dict[str, float] = {}
    for row in latest_rows(rows):
        if row["method"] != method or ratio_key(row["ratio"]) != ratio_key(ratio):
            continue
        score = row.get("score")
        out[str(row["item_id"])] = float(score) if score is not None else float(bool(row.get("correct")))
    return out


def paired_difference(
    rows_a: Iterable[dict[str, Any]],
    method_a: str,
    rows_b: Iterable[dict[str, Any]],
    method_b: str,
    ratio: float,
) -> dict[str, Any]:
    """Mean of A − B over the items both have at `ratio`, its paired standard error, and both means.

    Raises ValueError when the two share no item (different data, or a method not evaluated).
    """
    a, b = _scores(rows_a, method_a, ratio), _scores(rows_b, method_b, ratio)
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"no item has both {method_a!r} and {method_b!r} at ratio {ratio:g}")
    d = [a[i] - b[i] for i in common]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    return {
        "ratio": float(ratio),
        "n": n,
        "a": method_a,
        "b": method_b,
        "accuracy_a": sum(a[i] for i in common) / n,
        "accuracy_b": sum(b[i] for i in common) / n,
        "difference": mean,
        "standard_error": math.sqrt(var / n),
        "only_a": len(set(a) - set(b)),
        "only_b": len(set(b) - set(a)),
    }
