"""Accuracy of CaCoVID against every pre-LLM baseline, on the presets it was trained on and held-out worlds.

Each world (`--worlds`, `;`-separated `--world` strings) is evaluated by the harness
(`cacovid.evaluate.run_evaluation`) with the `full` reference, the shipped CaCoVID policy of the world's
preset (`preset=classic` → policy/shipped/toy, `preset=decoys` → policy/shipped/toy-decoys) and every
registered selector except `oracle` (it reads the evidence) and `fastv` (it prunes inside the language
model, so it is not a pre-LLM method), at every `--ratios` retention, on the same items for every
method. Variants of a preset (more frames, another seed range, more distractors) use the preset's
policy: they are worlds the policy never saw in training.

Per world and (method, ratio): accuracy, % of full, evidence recall and, where the world asks
counterfactual questions (decoys), question sensitivity and its base rate. The headline of a world is
CaCoVID's % of full at `--headline-ratio` and its margin, in accuracy points, over the best other
selector there; the last printed line is the headline of the first decoys world (else the last world).

    .venv/bin/python bench/quality.py --out quality.json          # all worlds, 5 ratios
    .venv/bin/python bench/quality.py --quick                     # 2 items, 1 world per preset, 10 %

Rows go to `--work DIR/<world>/` (items.jsonl per world), so an interrupted run resumes there.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchutil
import torch

PRESET_WORLDS = {
    "classic": ["preset=classic", "preset=classic,frames=32", "preset=classic,seed_offset=30000000"]
    + ["preset=classic,num_distractors=8"],
    "decoys": ["preset=decoys", "preset=decoys,frames=32", "preset=decoys,seed_offset=30000000"],
}
DEFAULT_WORLDS = ";".join(w for worlds in PRESET_WORLDS.values() for w in worlds)
QUICK_WORLDS = ";".join(worlds[0] for worlds in PRESET_WORLDS.values())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default=None, help=f"';'-separated world strings (default: {DEFAULT_WORLDS})")
    ap.add_argument("--ratios", default=None, help="retention ratios ρ (default 0.25,0.2,0.15,0.1,0.05)")
    ap.add_argument("--items", type=int, default=None, help="synthetic items per world (default 16)")
    ap.add_argument("--headline-ratio", type=float, default=0.1, help="ratio of the headline figures")
    ap.add_argument("--batch-size", type=int, default=8, help="items per batched generate call")
    ap.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    ap.add_argument("--model", default="toy", help="toy | tiny | micro | checkpoint")
    ap.add_argument("--split", default="test", help="synthetic split the items come from")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--work", default=None, help="results folder per world (resumable; default: temporary)")
    ap.add_argument("--out", "--json", dest="json", default=None, help="also write the result to this JSON")
    ap.add_argument("--quick", action="store_true", help="2 items, one world per preset, ρ = 0.1")
    return ap


def _slug(world: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", world).strip("_")


def headline(world: str, rows: list[dict[str, Any]], ratio: float) -> dict[str, Any]:
    """CaCoVID's % of full at `ratio` and its margin (accuracy points) over the best other selector."""
    at = {r["method"]: r for r in rows if abs(r["ratio"] - ratio) < 1e-9}
    ours = at.get("cacovid")
    others = [r for m, r in at.items() if m not in ("cacovid", "full") and r["accuracy"] is not None]
    if ours is None or ours["accuracy"] is None or not others:
        return {"world": world, "ratio": ratio, "pct_of_full": None, "margin": None, "best_other": None}
    best = max(others, key=lambda r: r["accuracy"])
    return {
        "world": world,
        "ratio": ratio,
        "pct_of_full": ours["pct_of_full"],
        "margin": 100.0 * (ours["accuracy"] - best["accuracy"]),
        "best_other": best["method"],
    }


def headline_text(h: dict[str, Any]) -> str:
    if h["margin"] is None:
        return f"headline: {h['world']} has no CaCoVID / baseline rows at {100 * h['ratio']:g} %"
    return (
        f"headline: {h['world']} CaCoVID {benchutil.fmt(h['pct_of_full'], '{:.1f}')} % of full at "
        f"{100 * h['ratio']:g} %, {h['margin']:+.1f} points vs the best other ({h['best_other']})"
    )


def evaluate_world(adapter, world: str, args, ratios: list[float], work: Path) -> list[dict[str, Any]]:
    """One world through the harness: `full`, CaCoVID and the baselines on the same items."""
    from cacovid.data.sources import synthetic_source
    from cacovid.evaluate import EvalConfig, build_methods, run_evaluation

    policy = benchutil.policy_dir(benchutil.world_preset(world))
    names = ["full", "cacovid", *benchutil.baseline_names()]
    methods = build_methods(names, adapter, policy=str(policy), seed=args.seed)
    config = EvalConfig(ratios=ratios, batch_size=args.batch_size, seed=args.seed, keep_masks=False)
    source = synthetic_source(world, args.split, args.items)
    with torch.inference_mode():
        summary = run_evaluation(adapter, source, methods, work / _slug(world), config, model=args.model)
    keys = ("n", "accuracy", "pct_of_full", "evidence_recall", "question_sensitivity", "question_base_rate")
    rows = []
    for r in summary["rows"]:
        rows.append(
            {
                "world": world,
                "method": r["method"],
                "ratio": r["ratio"],
                **{k: r.get(k) for k in keys},
                "n_errors": r.get("n_errors", 0),
            }
        )
    return rows


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    benchutil.setup_torch(args.threads)
    if args.quick:
        args.worlds = args.worlds or QUICK_WORLDS
        args.ratios = args.ratios or "0.1"
        args.items = args.items or 2
    worlds = [w.strip() for w in (args.worlds or DEFAULT_WORLDS).split(";") if w.strip()]
    if not worlds:
        raise SystemExit("--worlds: no world given")
    for w in worlds:
        benchutil.world_preset(w)  # fail before any model loads
    ratios = benchutil.parse_ratios(args.ratios or "0.25,0.2,0.15,0.1,0.05")
    items = args.items or 16
    if items < 1 or args.batch_size < 1:
        raise SystemExit(f"need --items >= 1 and --batch-size >= 1, got {items}, {args.batch_size}")
    args.items = items
    if adapter is None:
        adapter = benchutil.load_model(args.model, torch.device("cpu"))
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="cacovid-quality-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        for world in worlds:
            start = time.perf_counter()
            rows += evaluate_world(adapter, world, args, ratios, work)
            seconds[world] = time.perf_counter() - start
    heads = [headline(w, [r for r in rows if r["world"] == w], args.headline_ratio) for w in worlds]
    decoys = [h for h in heads if benchutil.world_preset(h["world"]) == "decoys"]
    main_head = decoys[0] if decoys else heads[-1]
    return {
        "quality": True,
        "model": args.model,
        "split": args.split,
        "items": items,
        "ratios": ratios,
        "worlds": worlds,
        "methods": ["full", "cacovid", *benchutil.baseline_names()],
        "rows": rows,
        "headlines": heads,
        "headline": headline_text(main_head),
        "seconds": seconds,
        "env": benchutil.environment(),
    }


def render(result: dict[str, Any]):
    from rich.table import Table

    out: list[Any] = []
    for world in result["worlds"]:
        rows = [r for r in result["rows"] if r["world"] == world]
        counterfactual = any(r["question_sensitivity"] is not None for r in rows)
        table = Table(title=f"quality on {world} ({result['items']} {result['split']} items)")
        cols = ["method", "ρ", "acc %", "% full", "recall %"]
        cols += ["q-sens %", "q-base %"] if counterfactual else []
        for col in cols:
            table.add_column(col, justify="right")
        for r in rows:
            cells = [
                r["method"],
                f"{100 * r['ratio']:g}%",
                "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}",
                benchutil.fmt(r["pct_of_full"], "{:.1f}"),
                "—" if r["evidence_recall"] is None else f"{100 * r['evidence_recall']:.1f}",
            ]
            if counterfactual:
                for key in ("question_sensitivity", "question_base_rate"):
                    cells.append("—" if r[key] is None else f"{100 * r[key]:.1f}")
            table.add_row(*cells)
        out.append(table)
    others = [headline_text(h) for h in result["headlines"]]
    out += [text for text in others if text != result["headline"]]
    out.append(result["headline"])  # last: the headline figure
    return out


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run every world, print a table per world and the headlines (the last line: decoys), write the
    JSON (`--out`) and return the result."""
    args = build_parser().parse_args(argv)
    result = run(args, adapter)
    benchutil.print_parts(render(result))
    benchutil.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
