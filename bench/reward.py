"""Accuracy reward against the dense log-likelihood reward in training: convergence, final accuracy,
wall time per item.

Two settings train the same starting policy with the library's `Trainer` on the same items, with the
same three-mode sampler, G, I, learning rate and fixed training retention (the validation ratio), for
`--seeds` seeds each (`benchutil/rl_runs.py` holds the machinery it shares with `convergence.py`):

- `accuracy`: the paper's reward, a greedily generated answer scored against the solution;
- `dense`: the probability of the correct answer from one teacher-forced pass (docs/method.md §6).

Reported per reward: the mean validation-accuracy curve over seeds against optimiser steps and host
rollouts; the final accuracy (mean, std and range over seeds); the host rollouts needed to reach 95 %
of the accuracy reward's final accuracy; the share of training reward groups (per mode, as the
advantages are normalised, `rl_runs.group_stats`) with zero variance, which carry no signal; and wall
seconds per training item (validation excluded) and of its reward calls alone, with the dense /
accuracy ratio measured in the same run. `bench/diagnostics/reward_variance.py` compares the two
rewards on the same rollouts of one fixed policy; this script compares what training does with them.
The headline, the last line: final accuracy of each and the time ratio.

    .venv/bin/python bench/reward.py --out reward.json
    .venv/bin/python bench/reward.py --quick          # seconds: 2 items, 1 seed
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

REWARDS = ("accuracy", "dense")
REFERENCE = "accuracy"
TARGET_SHARE = 0.95


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rl_runs.add_run_args(ap, train_items=120, val_every=24, seeds=3)
    return ap


def zero_variance(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Share of the training reward groups (one per iteration) whose rewards do not vary: all G
    together, the token-mode group and the frame-mode group (each normalised on its own)."""
    from cacovid.train.sampling import CONTENT, FRAME, TOKEN

    flags: dict[str, list[bool]] = {"zero_var": [], "zero_var_token": [], "zero_var_frame": []}
    for run in runs:
        n_tok, n_frame, n_content = run["mode_counts"]  # the order sample_rollouts returns them in
        modes = torch.tensor([TOKEN] * n_tok + [FRAME] * n_frame + [CONTENT] * n_content)
        for group in run["rewards"]:
            stats = rl_runs.group_stats(torch.tensor(group, dtype=torch.float32), modes)
            for key, values in flags.items():
                if stats[key] is not None:
                    values.append(bool(stats[key]))
    return {k: (sum(v) / len(v) if v else None) for k, v in flags.items()}


def mean_reward(runs: Sequence[dict[str, Any]]) -> float | None:
    values = [x for run in runs for group in run["rewards"] for x in group]
    return sum(values) / len(values) if values else None


def headline_text(result: dict[str, Any]) -> str:
    per = result["summary"]["per_setting"]
    acc, dense = per.get("accuracy"), per.get("dense")
    if acc is None or dense is None:
        return "headline: needs both rewards"
    ratio = result["time_ratio_dense_to_accuracy"]
    return (
        f"headline: final val accuracy at {100 * result['ratio']:g} %, accuracy reward "
        f"{100 * acc['final']['mean']:.1f} ± {100 * acc['final']['std']:.1f} vs dense "
        f"{100 * dense['final']['mean']:.1f} ± {100 * dense['final']['std']:.1f} "
        f"({result['seeds']} seed(s)); training time per item dense / accuracy "
        f"{benchutil.fmt(ratio, '{:.2f}')}×"
    )


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    rl_runs.apply_quick(args)
    rl_runs.check_args(args)
    benchutil.setup_torch(args.threads)
    if adapter is None:
        adapter = benchutil.load_model(args.model, torch.device("cpu"))
    settings = {name: {"reward": name} for name in REWARDS}
    with tempfile.TemporaryDirectory(prefix="cacovid-reward-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        runs = rl_runs.run_all(adapter, settings, args, work)
    summary = rl_runs.summarise(runs, list(REWARDS), REFERENCE, TARGET_SHARE)
    for name, row in summary["per_setting"].items():
        mine = [r for r in runs if r["name"] == name]
        row["zero_variance"] = zero_variance(mine)
        row["mean_training_reward"] = mean_reward(mine)
    per = summary["per_setting"]
    acc_s, dense_s = (per[n]["train_seconds_per_item"]["mean"] for n in REWARDS)
    acc_r, dense_r = (per[n]["reward_seconds_per_item"]["mean"] for n in REWARDS)
    result = {
        "benchmark": "reward",
        "model": args.model,
        "model_description": benchutil.describe_model(args.model),
        "world": args.world,
        "start": args.init_policy or f"fresh policy, question-match width {rl_runs.QUESTION_MATCH_DIM}",
        "rewards": list(REWARDS),
        "ratio": args.ratio,
        "train_items": args.train_items,
        "val_items": args.val_items,
        "val_every": args.val_every,
        "group_size": args.group_size,
        "iterations": args.iterations,
        "lr": args.lr,
        "kl_coef": args.kl_coef,
        "seeds": args.seeds,
        "runs": [{k: v for k, v in r.items() if k != "rewards"} for r in runs],
        "summary": summary,
        "time_ratio_dense_to_accuracy": dense_s / acc_s if acc_s else None,
        "reward_time_ratio_dense_to_accuracy": dense_r / acc_r if acc_r else None,
        "hardware": rl_runs.hardware(),
    }
    result["headline"] = headline_text(result)
    return result


def render(result: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    f = benchutil.fmt
    per = result["summary"]["per_setting"]
    curve = rl_runs.curve_table(result)
    title = (
        f"per reward; start: {result['start']}; seconds on {result['hardware']['cpu']}, "
        f"{result['hardware']['torch_threads']} thread(s)"
    )
    summary = Table(title=title, min_width=len(title) + 4)
    for h in (
        "reward",
        "start %",
        "final % (mean ± std)",
        "final range",
        "final recall",
        "rollouts to target",
        "mean reward",
        "0-var token",
        "0-var frame",
        "train s / item",
        "reward s / item",
    ):
        summary.add_column(h, justify="left" if h == "reward" else "right")
    for name, row in per.items():
        fin, zv = row["final"], row["zero_variance"]
        summary.add_row(
            name,
            f(_pct(row["start"]["mean"]), "{:.1f}"),
            f"{100 * fin['mean']:.1f} ± {100 * fin['std']:.1f}",
            f"{100 * fin['min']:.1f}–{100 * fin['max']:.1f}",
            f(row["final_recall"]["mean"], "{:.3f}"),
            "not reached" if row["rollouts_to_target"] is None else f"{row['rollouts_to_target']:.0f}",
            f(row["mean_training_reward"], "{:.3f}"),
            f(_pct(zv["zero_var_token"]), "{:.0f} %"),
            f(_pct(zv["zero_var_frame"]), "{:.0f} %"),
            f(row["train_seconds_per_item"]["mean"], "{:.2f}"),
            f(row["reward_seconds_per_item"]["mean"], "{:.2f}"),
        )
    target = result["summary"]["target"]
    note = (
        f"target: {100 * TARGET_SHARE:g} % of the accuracy reward's final accuracy = "
        f"{f(_pct(target), '{:.1f}')} %; reward time per item dense / accuracy "
        f"{f(result['reward_time_ratio_dense_to_accuracy'], '{:.2f}')}×"
    )
    return [curve, summary, note, result["headline"]]


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Train with both rewards, print the curve and summary tables and the headline (last line),
    write the JSON (`--out`) and return the result."""
    args = build_parser().parse_args(argv)
    result = run(args, adapter)
    benchutil.print_parts(render(result))
    benchutil.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
