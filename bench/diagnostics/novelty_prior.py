"""How much of a primed policy's accuracy is the novelty prior's: the prior alone, the policy alone, both.

A CaCoVID policy can add w·(standardised temporal novelty) to its token scores
(`PolicyConfig.novelty_weight`). This script evaluates one saved policy with that weight overridden to
each of `--weights` (0 = the policy's own heads only), beside the training-free `novelty` selector
(the prior alone), on the same items, ratios and selection options (the policy's `selection.json`).
A primed policy is worth its training only where it beats both the prior alone and w = 0.

    .venv/bin/python bench/diagnostics/novelty_prior.py --policy src/cacovid/policy/shipped/toy \
        --weights 0,2,4 --items 200 --split val
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

try:
    import benchutil
except ModuleNotFoundError:  # run as a script: the shared helper package is in bench/, one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import benchutil


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="saved CaCoVID policy folder")
    ap.add_argument("--weights", default="0,2,4", help="novelty weights w to evaluate the policy at")
    ap.add_argument("--ratios", default="0.25,0.1,0.05", help="retention ratios ρ")
    ap.add_argument("--items", type=int, default=100, help="synthetic items")
    ap.add_argument("--batch-size", type=int, default=16, help="rows per batched generate call")
    benchutil.add_synthetic_args(ap)
    return ap


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    from cacovid.evaluate.methods import selection_options
    from cacovid.policy import CaCoVIDPolicy, CaCoVIDSelector
    from cacovid.selectors import NoveltySelector
    from cacovid.train.validation import validate_selector

    benchutil.setup_torch(args.threads)
    ratios = benchutil.parse_ratios(args.ratios)
    weights = benchutil.parse_floats(args.weights)
    if any(w < 0 for w in weights):
        raise SystemExit(f"--weights must be >= 0, got {args.weights}")
    if adapter is None:
        adapter = benchutil.load_model(args.model or benchutil.default_model(), torch.device("cpu"))
    policy = CaCoVIDPolicy.from_pretrained(args.policy, host=adapter).eval()
    options = selection_options(args.policy)
    items = benchutil.synthetic_items(args.items, args.world, args.split)
    with torch.inference_mode():
        prompts = [adapter.encode_item(it) for it in items]
    runs: list[tuple[str, float | None, Any]] = [("novelty (prior alone)", None, NoveltySelector())]
    for w in weights:
        primed = CaCoVIDPolicy(
            dataclasses.replace(policy.config, novelty_weight=w), policy.layer, policy.rotary
        )
        primed.load_state_dict(policy.state_dict())
        runs.append((f"cacovid, w = {w:g}", w, CaCoVIDSelector(primed.eval(), **options)))
    rows_out = []
    for name, w, selector in runs:
        with torch.inference_mode():
            rows = validate_selector(adapter, selector, prompts, items, ratios, batch_size=args.batch_size)
        for r in rows:
            rows_out.append({"method": name, "weight": w, **r})
    return {
        "items": len(items),
        "split": args.split,
        "policy": args.policy,
        "own_weight": policy.config.novelty_weight,
        "selection": options,
        "rows": rows_out,
        "env": benchutil.environment(),
    }


def render(result: dict[str, Any]):
    from rich.table import Table

    table = Table(
        title=f"novelty prior ({result['items']} {result['split']} items, own w {result['own_weight']:g})"
    )
    for col in ("method", "ρ", "accuracy", "recall"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(
            r["method"],
            f"{r['ratio']:g}",
            benchutil.fmt(r["accuracy"], "{:.3f}"),
            benchutil.fmt(r.get("evidence_recall"), "{:.3f}"),
        )
    return table


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run the comparison, print the table and return the result."""
    return benchutil.run_script(build_parser, run, render, argv, adapter)


if __name__ == "__main__":
    main()
