"""Does online combination-space sampling speed up policy optimisation? Four samplers, same budget.

The paper says its three-mode sampler (docs/method.md §4 step 2) speeds up optimisation, without a
number. Each sampler trains the same starting policy with the library's `Trainer` on the same
question-dependent items (`--world preset=decoys`), with the same G, I, learning rate and fixed
training retention (the validation ratio, 10 %), for `--seeds` seeds each:

- `modes`: the three-mode sampler as shipped (token mode, 1/4 frame mode, one content rollout);
- `naive`: every rollout draws its T·k tokens without replacement from softmax(s) over the whole
  video (`TrainConfig.sampler = "naive"`);
- `token`: token mode only (frame share 0, no content rollout);
- `frame`: frame mode only (frame share 1, no content rollout).

Every iteration of every sampler asks the host for exactly G answers, so host rollouts and optimiser
steps grow alike; both are counted (rollouts by a wrapper around the reward) and reported. The
starting policy is a fresh one from the host with the question-match term (`--init-policy` starts
from a saved one instead). Reported per sampler: the mean validation-accuracy curve over seeds (at
the validation ratio, on `--val-items` val items) against steps and rollouts, the final accuracy
(mean, std and range over seeds), training seconds per item. The headline, the last line: host
rollouts each sampler needs to reach 95 % of the three-mode sampler's final accuracy (on the
seed-mean curves; per seed in the JSON).

    .venv/bin/python bench/convergence.py --out convergence.json
    .venv/bin/python bench/convergence.py --quick          # seconds: 2 items, 1 seed
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchutil
import torch
from benchutil import rl_runs

SAMPLERS: dict[str, dict[str, Any]] = {
    "modes": {},
    "naive": {"sampler": "naive", "frame_share": 0.0, "content_rollout": False},
    "token": {"frame_share": 0.0, "content_rollout": False},
    "frame": {"frame_share": 1.0, "content_rollout": False},
}
REFERENCE = "modes"
TARGET_SHARE = 0.95


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rl_runs.add_run_args(ap, train_items=80, val_every=20, seeds=3)
    ap.add_argument("--samplers", default=",".join(SAMPLERS), help=f"subset of {', '.join(SAMPLERS)}")
    ap.add_argument("--reward", default="accuracy", help="rollout reward of every run (TrainConfig.reward)")
    return ap


def headline_text(result: dict[str, Any]) -> str:
    s = result["summary"]
    if s["target"] is None:
        return "headline: no three-mode (modes) runs, so no target accuracy"
    parts = []
    for name, row in s["per_setting"].items():
        got = row["rollouts_to_target"]
        parts.append(f"{name} {'not reached' if got is None else f'{got:.0f}'}")
    start = s["per_setting"][REFERENCE]["start"]["mean"]
    note = " (already met at the start)" if start is not None and start >= s["target"] - 1e-12 else ""
    return (
        f"headline: host rollouts to reach {100 * TARGET_SHARE:g} % of the three-mode sampler's final "
        f"val accuracy ({100 * s['reference_final']:.1f} % → target {100 * s['target']:.1f} %{note}) at "
        f"{100 * result['ratio']:g} %: " + ", ".join(parts)
    )


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    rl_runs.apply_quick(args)
    rl_runs.check_args(args)
    names = benchutil.parse_names(args.samplers)
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown or not names:
        raise SystemExit(f"--samplers: unknown {unknown} (choose from {', '.join(SAMPLERS)})")
    benchutil.setup_torch(args.threads)
    if adapter is None:
        adapter = benchutil.load_model(args.model, torch.device("cpu"))
    settings = {n: {**SAMPLERS[n], "reward": args.reward} for n in names}
    with tempfile.TemporaryDirectory(prefix="cacovid-convergence-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        runs = rl_runs.run_all(adapter, settings, args, work)
    result = {
        "benchmark": "convergence",
        "model": args.model,
        "model_description": benchutil.describe_model(args.model),
        "world": args.world,
        "start": args.init_policy or f"fresh policy, question-match width {rl_runs.QUESTION_MATCH_DIM}",
        "samplers": names,
        "sampler_configs": settings,
        "ratio": args.ratio,
        "train_items": args.train_items,
        "val_items": args.val_items,
        "val_every": args.val_every,
        "group_size": args.group_size,
        "iterations": args.iterations,
        "lr": args.lr,
        "kl_coef": args.kl_coef,
        "reward": args.reward,
        "seeds": args.seeds,
        "runs": [{k: v for k, v in r.items() if k != "rewards"} for r in runs],
        "hardware": rl_runs.hardware(),
    }
    result["summary"] = rl_runs.summarise(runs, names, REFERENCE, TARGET_SHARE)
    result["headline"] = headline_text(result)
    return result


def render(result: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    f = benchutil.fmt
    per = result["summary"]["per_setting"]
    curve = rl_runs.curve_table(result)
    summary = Table(title=f"per sampler; start: {result['start']}; hardware: {result['hardware']['cpu']}")
    for h in (
        "sampler",
        "start %",
        "final % (mean ± std)",
        "final range",
        "best % (mean)",
        "final recall",
        "rollouts to target",
        "per seed",
        "train s / item",
    ):
        summary.add_column(h, justify="left" if h == "sampler" else "right")
    for name, row in per.items():
        fin = row["final"]
        seeds = ", ".join("—" if v is None else f"{v:.0f}" for v in row["rollouts_to_target_per_seed"])
        summary.add_row(
            name,
            f(_pct(row["start"]["mean"]), "{:.1f}"),
            f"{100 * fin['mean']:.1f} ± {100 * fin['std']:.1f}",
            f"{100 * fin['min']:.1f}–{100 * fin['max']:.1f}",
            f(_pct(row["best"]["mean"]), "{:.1f}"),
            f(row["final_recall"]["mean"], "{:.3f}"),
            "not reached" if row["rollouts_to_target"] is None else f"{row['rollouts_to_target']:.0f}",
            seeds,
            f(row["train_seconds_per_item"]["mean"], "{:.2f}"),
        )
    return [curve, summary, result["headline"]]


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run every sampler and seed, print the curve and summary tables and the headline (last line),
    write the JSON (`--out`) and return the result."""
    args = build_parser().parse_args(argv)
    result = run(args, adapter)
    benchutil.print_parts(render(result))
    benchutil.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
