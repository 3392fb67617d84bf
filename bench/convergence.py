"""Does online combination-space sampling speed up policy optimisation? Three samplers, two starts.

The paper says its three-mode sampler (docs/method.md §4 step 2) speeds up optimisation, without a
number. Each sampler trains the same starting policy with the library's `Trainer` on the same
question-dependent items (`--world preset=decoys`) with the answer-only recipe of the shipped decoys
policy (recipes/toy/cacovid-decoys/rl.yaml: log-odds reward, leave-one-out baselines, G = 16, one
iteration per item, 8 items per optimiser step, copied layer frozen) at a fixed training retention
(the validation ratio, 10 %, so every sampler keeps as many tokens per rollout), for `--seeds` seeds:

- `modes`: the paper's three-mode sampler (token mode, 1/4 frame mode, one content rollout) with its
  per-token Bernoulli surrogate;
- `naive`: every rollout draws its T·k tokens without replacement from softmax(s) over the whole
  video, with the same Bernoulli surrogate (`TrainConfig.sampler = "naive"`);
- `gumbel`: the same global draws with their exact Plackett–Luce log-probability (`"gumbel"`);

each from two starts: `fresh` (a fresh policy, its question-match term at zero: no prior of any kind)
and `prior` (the term's key started equal to its query, the recipe's label-free prior). Every
iteration asks the host for exactly G answers per item, so host forwards are counted by a wrapper
around the reward. Reported per setting: the mean validation-accuracy curve over seeds (global top-K
at the validation ratio, on `--val-items` val items) against host forwards, the final accuracy (mean,
std and range over seeds). The headline, the last line: host forwards each setting needs to reach
90 % of the best setting's final accuracy (on the seed-mean curves; per seed in the JSON).

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
    "modes": {"sampler": "modes", "frame_share": 0.25, "content_rollout": True},
    "naive": {"sampler": "naive", "frame_share": 0.0, "content_rollout": False},
    "gumbel": {"sampler": "gumbel", "frame_share": 0.0, "content_rollout": False},
}
STARTS: dict[str, dict[str, Any]] = {
    "fresh": {"question_match_init": "zero"},
    "prior": {"question_match_init": "query"},
}
# The recipe's settings every run shares (recipes/toy/cacovid-decoys/rl.yaml), beside the fixed
# retention, G, I, learning rate and items per step of the command line.
RECIPE: dict[str, Any] = {
    "reward": "logodds",
    "advantage": "leave_one_out",
    "layer_lr_scale": 0.0,
    "min_lr_scale": 1.0,
    "val_selection": {"alpha": 0.0, "fill": "score"},
}
TARGET_SHARE = 0.9


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rl_runs.add_run_args(ap, train_items=800, val_every=160, seeds=3)
    ap.set_defaults(group_size=16, iterations=1, lr=5e-4)
    ap.add_argument("--samplers", default=",".join(SAMPLERS), help=f"subset of {', '.join(SAMPLERS)}")
    ap.add_argument("--starts", default=",".join(STARTS), help=f"subset of {', '.join(STARTS)}")
    ap.add_argument("--items-per-step", type=int, default=8, help="items per optimiser step")
    return ap


def headline_text(result: dict[str, Any]) -> str:
    s = result["summary"]
    parts = []
    for name, row in s["per_setting"].items():
        got = row["rollouts_to_target"]
        seeds = [v for v in row["rollouts_to_target_per_seed"] if v is not None]
        spread = (
            f" (seeds {min(seeds):.0f}–{max(seeds):.0f}, {len(seeds)}/{len(row['seeds'])} reached)"
            if seeds
            else ""
        )
        parts.append(f"{name} {'not reached' if got is None else f'{got:.0f}'}{spread}")
    return (
        f"headline: host forwards to reach {100 * TARGET_SHARE:g} % of the best final val accuracy "
        f"({s['reference']} {100 * s['reference_final']:.1f} % → target {100 * s['target']:.1f} %) at "
        f"{100 * result['ratio']:g} %: " + ", ".join(parts)
    )


def settings_of(
    samplers: Sequence[str], starts: Sequence[str], items_per_step: int
) -> dict[str, dict[str, Any]]:
    """TrainConfig (and start) fields of every compared setting, named sampler-start."""
    shared = {k: v for k, v in RECIPE.items() if k != "val_selection"}
    return {
        f"{sampler}-{start}": {
            **shared,
            "items_per_step": items_per_step,
            **SAMPLERS[sampler],
            **STARTS[start],
        }
        for start in starts
        for sampler in samplers
    }


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    rl_runs.apply_quick(args)
    rl_runs.check_args(args)
    samplers, starts = benchutil.parse_names(args.samplers), benchutil.parse_names(args.starts)
    unknown = [n for n in samplers if n not in SAMPLERS] + [n for n in starts if n not in STARTS]
    if unknown or not samplers or not starts:
        raise SystemExit(
            f"--samplers / --starts: unknown {unknown} "
            f"(choose from {', '.join(SAMPLERS)}; {', '.join(STARTS)})"
        )
    if args.items_per_step < 1:
        raise SystemExit(f"--items-per-step must be >= 1, got {args.items_per_step}")
    benchutil.setup_torch(args.threads)
    if adapter is None:
        adapter = benchutil.load_model(args.model, torch.device("cpu"))
    settings = settings_of(samplers, starts, args.items_per_step)
    with tempfile.TemporaryDirectory(prefix="cacovid-convergence-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        runs = rl_runs.run_all(adapter, settings, args, work, val_selection=RECIPE["val_selection"])
    names = list(settings)
    first = rl_runs.summarise(runs, names, names[0], TARGET_SHARE)["per_setting"]
    best = max(names, key=lambda n: first[n]["final"]["mean"])
    result = {
        "benchmark": "convergence",
        "model": args.model,
        "model_description": benchutil.describe_model(args.model),
        "world": args.world,
        "samplers": samplers,
        "starts": starts,
        "settings": names,
        "setting_configs": settings,
        "recipe": RECIPE,
        "ratio": args.ratio,
        "train_items": args.train_items,
        "val_items": args.val_items,
        "val_every": args.val_every,
        "group_size": args.group_size,
        "iterations": args.iterations,
        "items_per_step": args.items_per_step,
        "lr": args.lr,
        "seeds": args.seeds,
        "runs": [{k: v for k, v in r.items() if k != "rewards"} for r in runs],
        "hardware": rl_runs.hardware(),
    }
    result["summary"] = rl_runs.summarise(runs, names, best, TARGET_SHARE)
    result["headline"] = headline_text(result)
    return result


def render(result: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    f = benchutil.fmt
    per = result["summary"]["per_setting"]
    curve = rl_runs.curve_table(result)
    summary = Table(title=f"per sampler and start; hardware: {result['hardware']['cpu']}")
    for h in (
        "setting",
        "start %",
        "final % (mean ± std)",
        "final range",
        "best % (mean)",
        "final recall",
        "forwards to target",
        "per seed",
        "train s / item",
    ):
        summary.add_column(h, justify="left" if h == "setting" else "right")
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
    """Run every sampler, start and seed, print the curve and summary tables and the headline (last line),
    write the JSON (`--out`) and return the result."""
    args = build_parser().parse_args(argv)
    result = run(args, adapter)
    benchutil.print_parts(render(result))
    benchutil.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
