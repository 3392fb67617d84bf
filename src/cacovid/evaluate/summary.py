"""`summary.json` as a pure function of the per-item rows (docs/result-files.md).

Why pure: an interrupted run, a resumed run and a run recomputed from scratch must give the same
summary from the same rows, and outside checks can recompute it from items.jsonl alone.

Definitions (one row of the summary per (method, ratio)):
- `accuracy`: mean of the rows' `score` (0/1 for multiple choice and numbers; ROUGE-L or relative
  accuracy for free text / regression). Rows that failed (any `error`) count as wrong: dropping them
  would flatter a method that fails on hard items. `n_errors` (pipeline exceptions) and
  `n_unparsable` (answers naming no option) are reported beside it.
- `pct_of_full`: 100 × accuracy / accuracy of `full`, both over the items the two rows share (so a
  partial row is compared like for like); None without a full row or when full scores 0.
- `evidence_recall`: mean over rows whose item has a non-empty evidence mask of
  |kept ∩ evidence| / |evidence|; None when no item has evidence.
- `kept_tokens_mean`: mean kept video tokens; `compression_ms`: median selection time.
- `per_family`: accuracy per question family.
- `per_category` (benchmarks, whose rows carry `categories`: axis → value, e.g. Video-MME's
  duration and task type): accuracy per value of each axis, {axis: {value: accuracy}}. The header
  lists each axis's values in first-seen order (`categories`) and how many items each holds
  (`category_counts`). Empty where no row has categories (older result files, synthetic data).
- `flop_equivalent_ratio` (FastV-style rows only): mean input ratio with equal prefill FLOPs.
- `question_sensitivity` (items with a counterfactual question, selector rows): mean share of the
  counterfactual target's evidence the selector keeps when asked the counterfactual question;
  `question_base_rate`: the same share kept when asked the item's own question (what a
  question-blind selector keeps either way); `question_jaccard`: mean overlap of the two selections.
  None where no row has them (older result files, data sets without counterfactuals).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cacovid.evaluate.records import RUN_FILE, latest_rows, ratio_key, read_json, read_rows

# Reference rows come first in tables, in this order.
REFERENCE_METHODS = ("full", "blind", "oracle")
PIPELINE_ERRORS = ("encode", "select", "generate", "score")
# Per-row question-sensitivity figures (see the module docstring), averaged per (method, ratio).
QUESTION_KEYS = ("question_sensitivity", "question_base_rate", "question_jaccard")


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _score(row: dict[str, Any]) -> float:
    if row.get("score") is not None:
        return float(row["score"])
    return float(row.get("correct") or 0)


def _is_pipeline_error(row: dict[str, Any]) -> bool:
    if row.get("error") is None:
        return False
    return row.get("error_kind", "select") in PIPELINE_ERRORS


def _method_order(rows: list[dict[str, Any]], run: dict[str, Any] | None) -> list[str]:
    seen: list[str] = []
    for name in (run or {}).get("methods", []):
        if name not in seen:
            seen.append(name)
    for row in rows:
        if row["method"] not in seen:
            seen.append(row["method"])
    refs = [m for m in REFERENCE_METHODS if m in seen]
    return refs + [m for m in seen if m not in REFERENCE_METHODS]


def _families(rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for row in rows:
        fam = row.get("family")
        if fam is not None and fam not in out:
            out.append(fam)
    return out


def _row_categories(row: dict[str, Any]) -> dict[str, str]:
    cats = row.get("categories")
    return {str(k): str(v) for k, v in cats.items() if v is not None} if isinstance(cats, dict) else {}


def category_axes(rows: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Category axis → its values, both in first-seen order, over rows that carry categories."""
    axes: dict[str, list[str]] = {}
    for row in rows:
        for axis, value in _row_categories(row).items():
            values = axes.setdefault(axis, [])
            if value not in values:
                values.append(value)
    return axes


def _category_counts(rows: list[dict[str, Any]], axes: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Distinct items per category value (an item counts once whatever its methods and ratios)."""
    items: dict[str, dict[str, str]] = {}
    for row in rows:
        items.setdefault(str(row["item_id"]), _row_categories(row))
    counts: dict[str, dict[str, int]] = {axis: dict.fromkeys(values, 0) for axis, values in axes.items()}
    for cats in items.values():
        for axis, value in cats.items():
            counts[axis][value] += 1
    return counts


def _per_category(group: list[dict[str, Any]], axes: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for axis, values in axes.items():
        scores: dict[str, list[float]] = {}
        for row in group:
            value = _row_categories(row).get(axis)
            if value is not None:
                scores.setdefault(value, []).append(_score(row))
        out[axis] = {v: float(sum(scores[v]) / len(scores[v])) for v in values if v in scores}
    return out


def summarize_group(
    group: list[dict[str, Any]],
    full_by_item: dict[str, float] | None,
    families: list[str],
    axes: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The summary row for one (method, ratio) group of per-item rows (`axes`: the run's category
    axes and their values, see `category_axes`)."""
    first = group[0]
    scores = [_score(r) for r in group]
    out: dict[str, Any] = {
        "method": first["method"],
        "ratio": ratio_key(first["ratio"]),
        "n": len(group),
        "accuracy": _mean(scores),
    }
    pct = None
    if full_by_item:
        common = [r for r in group if str(r["item_id"]) in full_by_item]
        full_acc = _mean([full_by_item[str(r["item_id"])] for r in common])
        if common and full_acc:
            pct = 100.0 * _mean([_score(r) for r in common]) / full_acc
    out["pct_of_full"] = pct
    out["evidence_recall"] = _mean(
        [float(r["evidence_recall"]) for r in group if r.get("evidence_recall") is not None]
    )
    out["kept_tokens_mean"] = _mean(
        [float(r["kept_tokens"]) for r in group if r.get("kept_tokens") is not None]
    )
    times = [float(r["compression_ms"]) for r in group if r.get("compression_ms") is not None]
    out["compression_ms"] = float(statistics.median(times)) if times else None
    per_family: dict[str, float] = {}
    for fam in families:
        fam_scores = [_score(r) for r in group if r.get("family") == fam]
        if fam_scores:
            per_family[fam] = float(sum(fam_scores) / len(fam_scores))
    out["per_family"] = per_family
    out["per_category"] = _per_category(group, axes or {})
    for key in QUESTION_KEYS:
        out[key] = _mean([float(r[key]) for r in group if r.get(key) is not None])
    flop_eq = [float(r["flop_equivalent_ratio"]) for r in group if r.get("flop_equivalent_ratio") is not None]
    if flop_eq:
        out["flop_equivalent_ratio"] = _mean(flop_eq)
    out["n_errors"] = sum(1 for r in group if _is_pipeline_error(r))
    out["n_unparsable"] = sum(1 for r in group if r.get("error_kind") == "unparsable")
    return out


def summarize(
    rows: Iterable[dict[str, Any]] | str | Path, run: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Summary dict (the summary.json contract) from per-item rows.

    `rows` may be the rows themselves, a path to items.jsonl or a results directory (then run.json
    beside it supplies `run` when not given). `run` supplies the header: model, dataset, world and
    the run's method order; everything else is computed from the rows.
    """
    if isinstance(rows, (str, Path)):
        path = Path(rows)
        folder = path if path.is_dir() else path.parent
        if run is None:
            run = read_json(folder / RUN_FILE)
        rows = read_rows(path)
    rows = latest_rows(rows)
    run = run or {}
    families = _families(rows)
    axes = category_axes(rows)
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], ratio_key(row["ratio"])), []).append(row)
    full_by_item = {str(r["item_id"]): _score(r) for r in rows if r["method"] == "full"}
    order = {m: i for i, m in enumerate(_method_order(rows, run))}
    keys = sorted(groups, key=lambda k: (order[k[0]], -k[1]))
    grids = Counter(tuple(r["grid"]) for r in rows if r.get("grid"))
    grid = grids.most_common(1)[0][0] if grids else None
    return {
        "model": run.get("model"),
        "dataset": run.get("dataset"),
        "world": run.get("world"),
        "n_items": len({str(r["item_id"]) for r in rows}),
        "tokens_per_frame": int(grid[1] * grid[2]) if grid else None,
        "frames": int(grid[0]) if grid else None,
        "n_errors": sum(1 for r in rows if _is_pipeline_error(r)),
        "n_unparsable": sum(1 for r in rows if r.get("error_kind") == "unparsable"),
        "families": families,
        "categories": axes,
        "category_counts": _category_counts(rows, axes),
        "rows": [summarize_group(groups[k], full_by_item, families, axes) for k in keys],
    }
