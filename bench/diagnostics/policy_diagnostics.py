"""Where a trained CaCoVID policy loses the evidence: score scale, token ranking, frame ranking.

Evidence recall at a retention ρ mixes three things, and each has a different fix:
- **score saturation**: the keep-probabilities σ(s) of the per-token Bernoulli decisions. When they sit
  at 0 or 1 (|s| in the tens or hundreds) the clipped surrogate can barely move the ranking among the
  top tokens, and RL stalls (docs/method.md's optional KL to Bernoulli(½) is the brake).
- **token ranking**: recall of the global top ⌊ρN⌋ tokens by s (what α = 0 with the score fill keeps),
  and the AUC of evidence against the other tokens inside the frames that hold evidence.
- **frame ranking**: the AUC of the frame head's u on evidence frames against the others. Selection
  with α > 0 spends the importance share by u, so a frame head below 0.5 costs recall. Beside it, the
  recall of the same top-K taken only inside the evidence frames (what a perfect frame ranking would
  allow) and the share of hard negatives that sit in frames without evidence.
The recall of the policy's own selection settings (`selection.json`) and of docs/method.md's defaults is
printed beside them. The synthetic world knows the evidence, so every figure is exact per item.

    .venv/bin/python bench/diagnostics/policy_diagnostics.py --policy src/cacovid/policy/shipped/toy \
        --items 60
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

try:
    import benchutil
except ModuleNotFoundError:  # run as a script: the shared helper package is in bench/, one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import benchutil


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--policy", default="", help="comma-separated saved policy folders (default: an untrained one)"
    )
    ap.add_argument("--items", type=int, default=60, help="synthetic items with evidence")
    ap.add_argument("--ratio", type=float, default=0.1, help="retention ρ of the recall figures")
    benchutil.add_synthetic_args(ap)
    return ap


def _auc(pos: Tensor, neg: Tensor) -> float | None:
    """P(a positive outscores a negative), ties counting one half; None when a side is empty."""
    if pos.numel() == 0 or neg.numel() == 0:
        return None
    diff = pos.reshape(-1, 1) - neg.reshape(1, -1)
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def diagnose(
    token_scores: Tensor,
    frame_scores: Tensor,
    evidence: Tensor,
    ratio: float,
    selections: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One item's figures from its (T, P) scores s, (T,) frame scores u and (T, P) evidence mask.

    `selections` maps a name to `budgeted_select` options; each gets a `recall_<name>` entry.
    Hard negatives are the non-evidence tokens inside the global top ⌊ρN⌋.
    """
    from cacovid.policy.select import budgeted_select
    from cacovid.types import token_budget

    s, u, ev = token_scores.float(), frame_scores.float(), evidence.bool()
    if s.shape != ev.shape or s.dim() != 2 or u.shape != (s.shape[0],):
        raise ValueError(
            f"need (T, P) scores and evidence and (T,) frame scores, got {s.shape}, {ev.shape}, {u.shape}"
        )
    n_ev = int(ev.sum())
    if n_ev == 0:
        raise ValueError("the item has no evidence tokens")
    flat, ev_flat = s.reshape(-1), ev.reshape(-1)
    top = torch.zeros_like(ev_flat)
    top[flat.topk(token_budget(flat.numel(), ratio)).indices] = True
    out: dict[str, Any] = {"recall_top_k": float((top & ev_flat).sum()) / n_ev}
    for name, options in selections.items():
        keep = budgeted_select(s, u, ratio, **options)
        out[f"recall_{name}"] = float((keep & ev_flat).sum()) / n_ev
    ev_frames = ev.any(1)
    # Which frames the budget goes to vs which tokens inside them: the same global top-K, but only
    # over the frames that hold evidence (the recall a perfect frame ranking would allow), and the
    # share of hard negatives that sit in frames without any evidence.
    in_ev_frames = torch.where(ev_frames.unsqueeze(1), s, torch.full_like(s, -torch.inf)).reshape(-1)
    top_ev_frames = torch.zeros_like(ev_flat)
    top_ev_frames[in_ev_frames.topk(min(top.sum().item(), int(ev_frames.sum()) * s.shape[1])).indices] = True
    out["recall_in_evidence_frames"] = float((top_ev_frames & ev_flat).sum()) / n_ev
    hard = (top & ~ev_flat).reshape(s.shape)
    n_hard = int(hard.sum())
    out["hard_outside_evidence_frames"] = float(hard[~ev_frames].sum()) / n_hard if n_hard else None
    out["frame_auc"] = _auc(u[ev_frames], u[~ev_frames])
    out["token_auc_in_evidence_frames"] = _auc(s[ev], s[ev_frames.unsqueeze(1) & ~ev])
    out["scores"] = {
        "evidence": s[ev],
        "hard_negative": flat[top & ~ev_flat],
        "rest": flat[~top & ~ev_flat],
    }
    return out


def _summary(values: list[Tensor]) -> dict[str, float]:
    v = torch.cat(values).double()
    q = v.quantile(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"q10": q[0], "median": q[1], "q90": q[2], "mean_sigma": float(torch.sigmoid(v).mean())}


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def diagnose_policy(adapter, policy, prompts, ratio: float, selections) -> dict[str, Any]:
    rows = []
    with torch.inference_mode():
        for prompt in prompts:
            out = policy(prompt)
            T, P = prompt.num_frames, prompt.tokens_per_frame
            rows.append(
                diagnose(
                    out.token_scores.reshape(T, P).cpu(),
                    out.frame_scores.cpu(),
                    prompt.evidence_mask.reshape(T, P).cpu(),
                    ratio,
                    selections,
                )
            )
    keys = [k for k in rows[0] if k != "scores"]
    result: dict[str, Any] = {k: _mean(rows, k) for k in keys}
    result["scores"] = {
        part: _summary([r["scores"][part] for r in rows if r["scores"][part].numel()])
        for part in ("evidence", "hard_negative", "rest")
        if any(r["scores"][part].numel() for r in rows)
    }
    return result


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    from cacovid.evaluate.methods import selection_options
    from cacovid.policy import CaCoVIDPolicy

    benchutil.setup_torch(args.threads)
    if not 0 < args.ratio <= 1:
        raise SystemExit(f"--ratio must be in (0, 1], got {args.ratio}")
    if adapter is None:
        adapter = benchutil.load_model(args.model or benchutil.default_model(), torch.device("cpu"))
    items = benchutil.synthetic_items(2 * args.items, args.world, args.split)
    with torch.inference_mode():
        prompts = [adapter.encode_item(it) for it in items]
    prompts = [p for p in prompts if p.evidence_mask is not None and bool(p.evidence_mask.any())]
    prompts = prompts[: args.items]
    if not prompts:
        raise SystemExit("no items with evidence tokens: nothing to diagnose")
    policies = [p for p in args.policy.split(",") if p.strip()] or [None]
    results = []
    for path in policies:
        if path is None:
            policy, own = benchutil.untrained_policy(adapter), {}
        else:
            policy = CaCoVIDPolicy.from_pretrained(path, host=adapter).to(adapter.device).eval()
            own = selection_options(path)
        selections = {"defaults": {}, "own": own}
        results.append(
            {
                "policy": path or "untrained",
                **diagnose_policy(adapter, policy, prompts, args.ratio, selections),
            }
        )
    return {
        "items": len(prompts),
        "ratio": args.ratio,
        "split": args.split,
        "policies": results,
        "env": benchutil.environment(),
    }


def render(result: dict[str, Any]):
    from rich.table import Table

    table = Table(
        title=f"policy diagnostics ({result['items']} {result['split']} items, ρ = {result['ratio']:g})"
    )
    cols = (
        "policy",
        "recall top-K",
        "recall own",
        "recall defaults",
        "recall in ev. frames",
        "hard neg. outside",
        "frame AUC",
        "token AUC",
    )
    for col in (*cols, "median s: ev", "hard", "rest", "mean σ hard"):
        table.add_column(col, justify="right")
    for r in result["policies"]:
        sc = r["scores"]
        median = [
            benchutil.fmt(sc[p]["median"] if p in sc else None) for p in ("evidence", "hard_negative", "rest")
        ]
        table.add_row(
            "/".join(r["policy"].rstrip("/").split("/")[-3:]),
            *(benchutil.fmt(r[k]) for k in ("recall_top_k", "recall_own", "recall_defaults")),
            *(benchutil.fmt(r[k]) for k in ("recall_in_evidence_frames", "hard_outside_evidence_frames")),
            *(benchutil.fmt(r[k]) for k in ("frame_auc", "token_auc_in_evidence_frames")),
            *median,
            benchutil.fmt(sc["hard_negative"]["mean_sigma"] if "hard_negative" in sc else None, "{:.3f}"),
        )
    return table


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run the diagnostics, print the table and return the result."""
    return benchutil.run_script(build_parser, run, render, argv, adapter)


if __name__ == "__main__":
    main()
