"""Reports from a results directory: a markdown table, an accuracy-vs-retention plot, heat-maps.

Why: readers of token-compression papers expect one layout — rows of methods grouped by retention
ratio under the uncompressed model, per-benchmark (here per-family) accuracy, the average and the
percentage of the uncompressed model — so the report uses it, and adds what those tables usually
hide: evidence recall, compression time and the measured prefill speed-up.

FastV-style rows are marked with a dagger and their FLOP-equivalent input ratio: that method spends
full-length compute in its first layers, so "25 % retention" costs it more than 25 % input pruning.
The plot draws FastV at its FLOP-equivalent ratio for the same reason.

Benchmarks whose items carry categories (Video-MME's duration, domain and task type; MVBench's and
MLVU's task; LongVideoBench's duration group) get one more table per category axis.

Inputs: summary.json (required), run.json, items.jsonl (heat-maps), efficiency.json (optional).
Outputs in `out` (default: the results directory): report.md, accuracy_vs_retention.png and
heatmap_<item>_r<ratio>.png files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cacovid.evaluate.heatmap import choose_items, item_heatmaps
from cacovid.evaluate.records import (
    EFFICIENCY_FILE,
    ITEMS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    latest_rows,
    ratio_key,
    read_json,
    read_rows,
)
from cacovid.evaluate.summary import REFERENCE_METHODS

PLOT_FILE = "accuracy_vs_retention.png"
REPORT_FILE = "report.md"
DAGGER = "†"


@dataclass
class ReportFiles:
    """Paths a report wrote."""

    markdown: Path
    plot: Path | None
    heatmaps: list[Path] = field(default_factory=list)


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _ratio_label(row: dict[str, Any]) -> str:
    method, ratio = row["method"], row["ratio"]
    if method == "full":
        return "100%"
    if method == "blind":
        return "0%"
    text = f"{100 * ratio:g}%"
    if row.get("flop_equivalent_ratio") is not None:
        text += f" ({100 * row['flop_equivalent_ratio']:.0f}% FLOP-eq.)"
    return text


def _efficiency_lookup(eff: dict[str, Any] | None) -> dict[tuple[str, float], dict[str, Any]]:
    if not eff:
        return {}
    return {(r["method"], ratio_key(r["ratio"])): r for r in eff.get("rows", [])}


def accuracy_table(summary: dict[str, Any], efficiency: dict[str, Any] | None = None) -> str:
    """The main markdown table (rows: method × ratio, references first, then grouped by ratio)."""
    families = summary.get("families") or sorted(
        {f for r in summary["rows"] for f in r.get("per_family", {})}
    )
    eff = _efficiency_lookup(efficiency)
    head = ["Method", "Retention", *families, "Avg.", "% of full", "Ev. recall", "Kept", "Compr. ms"]
    if eff:
        head.append("Prefill speed-up")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    refs = [r for r in summary["rows"] if r["method"] in ("full", "blind")]
    others = [r for r in summary["rows"] if r["method"] not in ("full", "blind")]
    ratios = sorted({ratio_key(r["ratio"]) for r in others}, reverse=True)
    blocks: list[tuple[str | None, list[dict[str, Any]]]] = [(None, refs)]
    blocks += [(f"Retention {100 * q:g}%", [r for r in others if ratio_key(r["ratio"]) == q]) for q in ratios]
    for label, rows in blocks:
        if label is not None:
            lines.append(f"| **{label}** |" + " |" * (len(head) - 1))
        for row in rows:
            name = row["method"] + (DAGGER if row.get("flop_equivalent_ratio") is not None else "")
            if row["method"] in REFERENCE_METHODS:
                name = f"*{name}*"
            cells = [name, _ratio_label(row)]
            cells += [_pct(row.get("per_family", {}).get(f)) for f in families]
            cells += [
                f"**{_pct(row['accuracy'])}**",
                _num(row.get("pct_of_full")),
                _pct(row.get("evidence_recall")),
                _num(row.get("kept_tokens_mean"), "{:.0f}"),
                _num(row.get("compression_ms"), "{:.2f}"),
            ]
            if eff:
                e = eff.get((row["method"], ratio_key(row["ratio"])))
                cells.append(_num(e.get("prefill_speedup") if e else None, "{:.2f}×"))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shown_category_axes(summary: dict[str, Any]) -> list[str]:
    """Category axes worth a table of their own: every axis of the summary except one that only
    repeats the per-family columns of the main table (a benchmark's first axis is its family)."""
    axes = summary.get("categories") or {}
    families = summary.get("families") or []
    out = []
    for axis, values in axes.items():
        same = list(values) == list(families) and all(
            (r.get("per_category") or {}).get(axis, {}) == (r.get("per_family") or {})
            for r in summary["rows"]
        )
        if not same:
            out.append(axis)
    return out


def category_cells(summary: dict[str, Any], axis: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows of cells) of the accuracy per value of one category axis: a row per (method,
    ratio) in the summary's order, a column per value (its item count in brackets), then the average."""
    values = (summary.get("categories") or {}).get(axis, [])
    counts = (summary.get("category_counts") or {}).get(axis, {})
    head = ["Method", "Retention", *(f"{v} ({counts[v]})" if v in counts else v for v in values), "Avg."]
    rows = []
    for row in summary["rows"]:
        per = (row.get("per_category") or {}).get(axis, {})
        rows.append(
            [row["method"], _ratio_label(row), *(_pct(per.get(v)) for v in values), _pct(row["accuracy"])]
        )
    return head, rows


def category_table(summary: dict[str, Any], axis: str) -> str:
    """Markdown table of the accuracy per value of one category axis (see `category_cells`)."""
    head, rows = category_cells(summary, axis)
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def efficiency_table(efficiency: dict[str, Any]) -> str:
    """Markdown table of efficiency.json: absolute numbers with ratios to the uncompressed model."""
    head = [
        "Method",
        "Retention",
        "Seq. len",
        "Compr. ms",
        "Vision ms",
        "Prefill ms",
        "TTFT ms",
        "Prefill GFLOPs",
        "Peak mem. Δ MB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in efficiency.get("rows", []):
        ratio = (
            "100%" if r["method"] == "full" else "0%" if r["method"] == "blind" else f"{100 * r['ratio']:g}%"
        )
        name = r["method"] + (DAGGER if r["method"] == "fastv" else "")
        cells = [
            name,
            ratio,
            _num(r.get("seq_len"), "{:.0f}"),
            _num(r.get("compression_ms"), "{:.2f}"),
            _num(r.get("vision_encoder_ms"), "{:.2f}"),
            _num(r.get("prefill_ms"), "{:.2f}") + _rel(r.get("prefill_speedup"), "×"),
            _num(r.get("ttft_ms"), "{:.2f}") + _rel(r.get("ttft_speedup"), "×"),
            _num(None if r.get("prefill_flops") is None else r["prefill_flops"] / 1e9, "{:.3f}")
            + _rel(r.get("flops_fraction"), "", pct=True),
            _num(r.get("peak_memory_delta_mb"), "{:.1f}")
            + _rel(r.get("memory_delta_fraction"), "", pct=True),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rel(x: float | None, unit: str, *, pct: bool = False) -> str:
    if x is None:
        return ""
    return f" ({100 * x:.0f}%)" if pct else f" ({x:.2f}{unit})"


def _panel(ax, rows: list[dict[str, Any]], key: str, ylabel: str) -> None:
    """One panel of the retention plot: `key` (accuracy or evidence_recall) per method vs retention."""
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] not in ("full", "blind")))
    cmap = plt.get_cmap("tab20")
    top = 0.0
    for i, m in enumerate(methods):
        pts = sorted(
            (r.get("flop_equivalent_ratio") or r["ratio"], r[key])
            for r in rows
            if r["method"] == m and r.get(key) is not None
        )
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        top = max(top, *ys)
        flop = any(r.get("flop_equivalent_ratio") is not None for r in rows if r["method"] == m)
        style: dict[str, Any] = (
            dict(marker="D", linestyle="--", markerfacecolor="none") if flop else {"marker": "o"}
        )
        if m == "oracle":
            style = dict(marker="*", linestyle=":", markersize=9)
        label = f"{m}{DAGGER} (at FLOP-eq. ratio)" if flop else m
        ax.plot([100 * x for x in xs], [100 * y for y in ys], label=label, color=cmap(i % 20), **style)
    for ref, style, what in (("full", "--", "all tokens"), ("blind", ":", "no video")):
        r = next((r for r in rows if r["method"] == ref), None)
        if r is not None and r.get(key) is not None:
            top = max(top, r[key])
            ax.axhline(100 * r[key], color="black", linestyle=style, linewidth=1, label=f"{ref} ({what})")
    ax.set_xlim(0, 100)
    ax.set_ylim(-2, min(100.0, max(10.0, 100 * top * 1.1)) if top < 0.9 else 102)
    ax.set_xlabel("retained video tokens (%)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def accuracy_plot(summary: dict[str, Any], path: Path) -> Path:
    """Accuracy vs retention for every method (FastV-style at its FLOP-equivalent ratio), full and
    blind as horizontal reference lines; a second panel shows evidence recall when it is known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    recall = any(r.get("evidence_recall") is not None for r in rows if r["method"] not in ("full", "blind"))
    fig, axes = plt.subplots(1, 2 if recall else 1, figsize=(11.5 if recall else 7.0, 4.4), squeeze=False)
    _panel(axes[0, 0], rows, "accuracy", "accuracy (%)")
    if recall:
        _panel(axes[0, 1], rows, "evidence_recall", "evidence recall (%)")
    fig.suptitle(
        f"{summary.get('model')} on {summary.get('dataset')} (n={summary.get('n_items')})", fontsize=9
    )
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _header(summary: dict[str, Any], run: dict[str, Any] | None) -> list[str]:
    planned = f" of {summary['n_items_planned']} planned" if summary.get("n_items_planned") else ""
    lines = [
        f"- model: `{summary.get('model')}`; data: `{summary.get('dataset')}`; "
        f"items: {summary.get('n_items')}{planned}",
        f"- video: {summary.get('frames')} frames × {summary.get('tokens_per_frame')} tokens per frame",
        f"- pipeline errors: {summary.get('n_errors', 0)}; "
        f"unparsable answers: {summary.get('n_unparsable', 0)} (both counted as wrong)",
    ]
    if summary.get("world"):
        w = summary["world"]
        lines.append("- world: " + ", ".join(f"{k}={v}" for k, v in w.items()))
    if run and run.get("max_new_tokens"):
        lines.append(f"- greedy decoding, at most {run['max_new_tokens']} new tokens; seed {run.get('seed')}")
    return lines


def build_report(
    results: str | Path,
    out: str | Path | None = None,
    *,
    items: Sequence[str] | None = None,
    n_heatmap_items: int = 2,
    note: str | None = None,
) -> ReportFiles:
    """Write report.md, the accuracy plot and heat-maps for a results directory; returns the paths.

    `items` picks the heat-map items by id (default: the first `n_heatmap_items` with evidence).
    `note` is a free paragraph placed under the title (e.g. what model the run used).
    """
    results = Path(results)
    summary = read_json(results / SUMMARY_FILE)
    if summary is None:
        raise FileNotFoundError(f"no {SUMMARY_FILE} in {results}")
    out_dir = Path(out) if out is not None else results
    out_dir.mkdir(parents=True, exist_ok=True)
    run = read_json(results / RUN_FILE) or {}
    efficiency = read_json(results / EFFICIENCY_FILE)
    rows = latest_rows(read_rows(results / ITEMS_FILE)) if (results / ITEMS_FILE).is_file() else []

    plot = accuracy_plot(summary, out_dir / PLOT_FILE) if summary["rows"] else None
    chosen = list(items) if items else choose_items(rows, n_heatmap_items)
    heatmaps = item_heatmaps(rows, run, chosen, out_dir) if rows else []

    md = ["# Token compression results", ""]
    if note:
        md += [note.strip(), ""]
    md += _header(summary, run) + [""]
    md += ["## Accuracy", "", accuracy_table(summary, efficiency), ""]
    md.append(
        "Accuracy in %, per question family and averaged; *% of full* compares with the uncompressed "
        "model on the same items; *Ev. recall* is the share of ground-truth evidence tokens kept; "
        "*Compr. ms* is the median selection time."
    )
    axes = shown_category_axes(summary) if summary["rows"] else []
    if axes:
        md += ["", "## Accuracy by category", ""]
        md.append(
            "Accuracy in % per value of each category the benchmark reports (items per value in "
            "brackets); failed rows count as wrong, as in the main table."
        )
        for axis in axes:
            md += ["", f"### {axis.replace('_', ' ')}", "", category_table(summary, axis)]
        md.append("")
    if any(r.get("flop_equivalent_ratio") is not None for r in summary["rows"]):
        md += [
            "",
            f"{DAGGER} FastV-style: prunes inside the language model after layer K, so its first K layers "
            "run on every token. Its nominal retention is shown with the input-pruning ratio of equal "
            "prefill FLOPs (FLOP-eq.), the ratio it should be compared at; its selection time includes the "
            "full-length forward that ranks the tokens.",
        ]
    if efficiency:
        md += ["", "## Efficiency", ""]
        md.append(
            f"Device `{efficiency.get('device_name')}` ({efficiency.get('dtype')}, "
            f"{efficiency.get('torch_threads')} threads), median of {efficiency.get('repeats')} "
            f"repeats after {efficiency.get('warmup')} warm-up on {efficiency.get('n_items')} items. "
            f"Ratios to the uncompressed model in brackets. Memory: {efficiency.get('memory_kind')} "
            "(increase during the prefill)."
        )
        md += ["", efficiency_table(efficiency), ""]
        if any(r["method"] == "fastv" for r in efficiency.get("rows", [])):
            md.append(
                f"{DAGGER} FastV-style rows: prefill time is measured on the input-pruned sequence (the "
                "execution path all methods share), while their FLOPs count the first K layers at full "
                "length as real FastV runs them; their selection time includes the ranking forward."
            )
        if efficiency.get("failed"):
            md.append(
                "Not measured: "
                + "; ".join(f"{f['method']}@{f['ratio']}: {f['error']}" for f in efficiency["failed"])
            )
    if plot is not None:
        md += ["", "## Accuracy vs retention", "", f"![accuracy vs retention]({plot.name})"]
    if heatmaps:
        md += ["", "## Token selection", ""]
        md.append(
            "Per method (rows) and frame (columns): kept tokens bright, dropped tokens dimmed, "
            "ground-truth evidence cells outlined in red."
        )
        for p in heatmaps:
            md += ["", f"![{p.stem}]({p.name})"]
    md_path = out_dir / REPORT_FILE
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return ReportFiles(markdown=md_path, plot=plot, heatmaps=heatmaps)
