"""Where a selector's accuracy goes: the evidence it misses, or the tokens it keeps instead.

A selector at ratio ρ keeps K = ⌊ρN⌋ tokens: some of the answer-bearing ones (its *hits*) and K − hits
others (its *picks*). Accuracy can fall short of the full-token model for two different reasons, and
they have different fixes: evidence that was missed (a ranking problem), or picks that mislead the
model (a selection that keeps look-alikes, which a frozen model may take for the object asked about).
The synthetic world knows the evidence, so four keep-masks of equal size K separate the two:

- `selector`: what the selector keeps;
- `hits + even`: its hits, the rest spread evenly over the non-evidence tokens (its picks replaced by
  a neutral fill; the gap to `selector` is what its picks cost);
- `evidence + picks`: all the evidence, the rest taken evenly from its own picks (its picks kept,
  the missed evidence restored; the gap to `selector` is what the missed evidence costs);
- `evidence + even`: the oracle, all the evidence and an even fill.

Items with more evidence tokens than K are left out (there, every variant is "some of the evidence").
Variants use the prompt's own token features; a merging selector's `selector` row uses its merged ones.

    .venv/bin/python bench/diagnostics/accuracy_decomposition.py --methods cacovid,uniform \
        --policy src/cacovid/policy/shipped/toy --items 150 --split val
"""

from __future__ import annotations

import argparse
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

VARIANTS = ("selector", "hits + even", "evidence + picks", "evidence + even")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="cacovid,uniform", help="selectors to decompose, comma list")
    ap.add_argument("--policy", default=None, help="saved CaCoVID policy (for the cacovid method)")
    ap.add_argument("--ratios", default="0.25,0.1", help="retention ratios ρ")
    ap.add_argument("--items", type=int, default=100, help="synthetic items (those with evidence ≤ K)")
    ap.add_argument("--batch-size", type=int, default=16, help="rows per batched generate call")
    ap.add_argument("--seed", type=int, default=0, help="seed of randomised selectors")
    benchutil.add_synthetic_args(ap)
    return ap


def decomposition_masks(keep: torch.Tensor, evidence: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four equal-size keep-masks of the module docstring, from a selector's (N,) keep mask.

    Needs at least as many kept tokens as evidence tokens (ValueError otherwise).
    """
    from cacovid.ops.fill import even_fill

    keep, evidence = keep.bool(), evidence.bool()
    if keep.shape != evidence.shape or keep.dim() != 1:
        raise ValueError(
            f"keep and evidence must be (N,) of one shape, got {tuple(keep.shape)}, {tuple(evidence.shape)}"
        )
    k, n_ev = int(keep.sum()), int(evidence.sum())
    if n_ev > k:
        raise ValueError(f"{n_ev} evidence tokens do not fit in {k} kept tokens")
    hits = keep & evidence
    picks = keep & ~evidence
    return {
        "selector": keep,
        "hits + even": hits | even_fill(~evidence, k - int(hits.sum())),
        "evidence + picks": evidence | even_fill(picks, k - n_ev),
        "evidence + even": evidence | even_fill(~evidence, k - n_ev),
    }


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    from cacovid.evaluate.methods import build_methods, parse_methods
    from cacovid.scoring import accuracy_reward
    from cacovid.types import token_budget

    benchutil.setup_torch(args.threads)
    ratios = benchutil.parse_ratios(args.ratios)
    names = parse_methods(args.methods, references=False, policy=bool(args.policy))
    if "fastv" in names:
        raise SystemExit("fastv prunes inside the language model: it has no input keep-mask to decompose")
    if adapter is None:
        adapter = benchutil.load_model(args.model or benchutil.default_model(), torch.device("cpu"))
    methods = build_methods(names, adapter, policy=args.policy, seed=args.seed)
    attention = any(m.needs_vision_attention for m in methods)
    items = benchutil.synthetic_items(args.items, args.world, args.split)
    with torch.inference_mode():
        prompts = [adapter.encode_item(it, vision_attention=attention) for it in items]
    pairs = [(it, p) for it, p in zip(items, prompts, strict=True) if p.evidence_mask is not None]
    pairs = [(it, p) for it, p in pairs if bool(p.evidence_mask.any())]
    if not pairs:
        raise SystemExit("no items with evidence tokens: nothing to decompose")
    rows_out = []
    for method in methods:
        for ratio in ratios:
            jobs: list[tuple[Any, str, tuple]] = []  # (item, variant, generate row)
            recalls, skipped = [], 0
            gen = torch.Generator().manual_seed(args.seed)
            with torch.inference_mode():
                for item, prompt in pairs:
                    ev = prompt.evidence_mask.reshape(-1).bool().cpu()
                    if int(ev.sum()) > token_budget(ev.numel(), ratio):
                        skipped += 1
                        continue
                    sel = method.select(prompt, ratio, generator=gen)
                    keep = sel.keep.reshape(-1).bool().cpu()
                    recalls.append(float((keep & ev).sum()) / float(ev.sum()))
                    for variant, mask in decomposition_masks(keep, ev).items():
                        embeds = sel.embeds if variant == "selector" else None
                        jobs.append((item, variant, (prompt, mask.to(sel.keep.device), embeds)))
            correct: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for start in range(0, len(jobs), args.batch_size):
                chunk = jobs[start : start + args.batch_size]
                texts = adapter.generate_rows([row for _, _, row in chunk], max_new_tokens=4)
                for text, (item, variant, _) in zip(texts, chunk, strict=True):
                    correct[variant].append(accuracy_reward(text, item))
            n = len(recalls)
            rows_out.append(
                {
                    "method": method.name,
                    "ratio": ratio,
                    "n": n,
                    "skipped": skipped,
                    "evidence_recall": sum(recalls) / n if n else None,
                    **{v: (sum(c) / n if n else None) for v, c in correct.items()},
                }
            )
    return {
        "items": len(pairs),
        "split": args.split,
        "policy": args.policy,
        "rows": rows_out,
        "env": benchutil.environment(),
    }


def render(result: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"accuracy decomposition ({result['items']} {result['split']} items)")
    for col in ("method", "ρ", "n", "recall", *VARIANTS):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(
            r["method"],
            f"{r['ratio']:g}",
            str(r["n"]),
            benchutil.fmt(r["evidence_recall"], "{:.3f}"),
            *(benchutil.fmt(r[v], "{:.3f}") for v in VARIANTS),
        )
    return table


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run the decomposition, print the table and return the result."""
    return benchutil.run_script(build_parser, run, render, argv, adapter)


if __name__ == "__main__":
    main()
