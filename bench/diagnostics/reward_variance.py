"""Dense reward vs accuracy reward on the trainer's own rollouts (docs/method.md §6).

The accuracy reward greedily generates an answer for every rollout and scores its text (what the
trainer uses by default); the dense reward reads the probability of the correct answer from one
teacher-forced pass. For `--items` synthetic items, one untrained policy (built from the host: its
scores are what training starts from) gives the "old" scores; every iteration draws G = 32 rollouts
with `cacovid.train.sampling.sample_rollouts` at the training retention r, exactly as
`PolicyUpdater.train_prompt` does, and scores the same rollouts with both rewards.

Reported:
- per item: mean and std of each reward over its rollouts (averaged over iterations), the
  correlation of the two rewards across rollouts, and whether the accuracy group had zero variance;
- overall: the fraction of groups (item × iteration) whose rewards have zero variance — all G
  rollouts together, and separately the token-mode and frame-mode groups, since advantages are
  normalised within each — which is a group that gives no learning signal; mean within-group std;
- wall time of each reward per iteration (one batched call over the G rollouts), median over all
  iterations after one unmeasured warm-up call of each.

    .venv/bin/python bench/diagnostics/reward_variance.py --items 8
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

try:
    import benchutil
except ModuleNotFoundError:  # run as a script: the shared helper package is in bench/, one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import benchutil
from benchutil.rl_runs import ZERO_STD, group_stats, reward_std


def _corr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if a.numel() < 2 or reward_std(a) < ZERO_STD or reward_std(b) < ZERO_STD:
        return None
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / math.sqrt(float((a * a).sum() * (b * b).sum())))


def _timed(device: torch.device, fn, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """fn(*args, **kwargs) and its wall time in ms (device-synchronised)."""
    benchutil.sync(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    benchutil.sync(device)
    return out, (time.perf_counter() - start) * 1000.0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=None, help="toy | tiny | micro | checkpoint (default: toy if installed)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(benchutil.DTYPES))
    ap.add_argument("--items", type=int, default=8, help="synthetic items K")
    ap.add_argument("--split", default="train", help="synthetic split the items come from")
    ap.add_argument("--world", default="", help="synthetic world overrides, e.g. frames=8")
    ap.add_argument("--group-size", type=int, default=32, help="rollouts G per iteration")
    ap.add_argument("--iterations", type=int, default=2, help="iterations (fresh rollouts) per item")
    ap.add_argument(
        "--ratio",
        type=float,
        default=None,
        help="training retention r (default: the paper's, TrainConfig.paper())",
    )
    ap.add_argument("--max-new-tokens", type=int, default=None, help="accuracy reward generation length")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    return ap


def run(args: argparse.Namespace, adapter=None) -> dict[str, Any]:
    from cacovid.train import TrainConfig
    from cacovid.train.rewards import dense_reward, rollout_reward
    from cacovid.train.sampling import content_scores, sample_rollouts

    benchutil.setup_torch(args.threads)
    device = benchutil.resolve_device(args.device)
    dtype = benchutil.DTYPES[args.dtype]
    if args.items < 1 or args.iterations < 1:
        raise SystemExit("--items and --iterations must be >= 1")
    base = TrainConfig.paper()  # the diagnostic measured the paper's three-mode rollouts
    config = TrainConfig.paper(
        group_size=args.group_size,
        ratio=base.ratio if args.ratio is None else args.ratio,
        ratio_min=min(base.ratio_min, args.ratio or base.ratio),
        ratio_max=max(base.ratio_max, args.ratio or base.ratio),
        max_new_tokens=base.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens,
        seed=args.seed,
    )
    model_name = args.model or (adapter.name_or_path if adapter is not None else benchutil.default_model())
    if adapter is None:
        adapter = benchutil.load_model(model_name, device, dtype)
    accuracy = rollout_reward("accuracy", config.max_new_tokens)
    rewards = {"accuracy": accuracy, "dense": dense_reward}
    policy = benchutil.untrained_policy(adapter)
    items = benchutil.synthetic_items(args.items, args.world, args.split)
    gen = torch.Generator().manual_seed(args.seed)

    per_item: list[dict[str, Any]] = []
    groups: dict[str, list[dict[str, Any]]] = {name: [] for name in rewards}
    times: dict[str, list[float]] = {name: [] for name in (*rewards, "sampling")}
    warmed = False
    for item in items:
        with torch.no_grad():
            prompt = adapter.encode_item(item)
            old = policy(prompt)
        T, P = prompt.num_frames, prompt.tokens_per_frame
        s_old = old.token_scores.reshape(T, P).float().cpu()
        u_old = old.frame_scores.float().cpu()
        feats = prompt.frame_features().detach().float().cpu()
        cached = content_scores(feats, config.dpc_neighbors) if config.content_rollout else None
        got: dict[str, list[torch.Tensor]] = {name: [] for name in rewards}
        corr: list[float] = []
        for _ in range(args.iterations):
            ro, ms = _timed(
                device, sample_rollouts, s_old, u_old, feats, config.ratio, config, gen, content=cached
            )
            times["sampling"].append(ms)
            rows = [(prompt, m, None) for m in ro.masks]
            if not warmed:  # first calls pay one-off costs (answer-token cache, kernels)
                for fn in rewards.values():
                    fn(adapter, rows, item)
                warmed = True
            for name, fn in rewards.items():
                r, ms = _timed(device, fn, adapter, rows, item)
                r = r.detach().float().cpu().reshape(-1)
                times[name].append(ms)
                got[name].append(r)
                groups[name].append(group_stats(r, ro.modes.cpu()))
            c = _corr(got["accuracy"][-1], got["dense"][-1])
            if c is not None:
                corr.append(c)
        row: dict[str, Any] = {
            "item": str(item.id),
            "family": item.family,
            "solution": item.solution,
            "kept": ro.kept,
            "per_frame": ro.per_frame,
        }
        for name in rewards:
            row[f"{name}_mean"] = sum(float(r.mean()) for r in got[name]) / len(got[name])
            row[f"{name}_std"] = sum(reward_std(r) for r in got[name]) / len(got[name])
        row["accuracy_zero_var"] = sum(g["zero_var"] for g in groups["accuracy"][-args.iterations :])
        row["corr"] = sum(corr) / len(corr) if corr else None
        per_item.append(row)

    summary = []
    for name in rewards:
        gs = groups[name]
        frac: dict[str, float | None] = {}
        for key in ("zero_var", "zero_var_token", "zero_var_frame"):
            flags = [g[key] for g in gs if g[key] is not None]
            frac[key] = sum(flags) / len(flags) if flags else None
        summary.append(
            {
                "reward": name,
                "mean": sum(g["mean"] for g in gs) / len(gs),
                "within_group_std": sum(g["std"] for g in gs) / len(gs),
                "zero_var_fraction": frac["zero_var"],
                "zero_var_fraction_token": frac["zero_var_token"],
                "zero_var_fraction_frame": frac["zero_var_frame"],
                "ms_per_iteration": benchutil.median(times[name]),
                "ms_per_rollout": benchutil.median(times[name]) / args.group_size,
            }
        )
    return {
        "benchmark": "reward_variance",
        "model": model_name,
        "model_description": benchutil.describe_model(model_name),
        "device": str(device),
        "dtype": args.dtype,
        "items": args.items,
        "split": args.split,
        "world": args.world or "default",
        "group_size": args.group_size,
        "iterations": args.iterations,
        "ratio": config.ratio,
        "max_new_tokens": config.max_new_tokens,
        "sampling_ms_per_iteration": benchutil.median(times["sampling"]),
        "environment": benchutil.environment(),
        "per_item": per_item,
        "summary": summary,
    }


def render(result: dict[str, Any]):
    """(per-item table, summary table)."""
    from rich.table import Table

    f = benchutil.fmt
    title = (
        f"rewards per item — {result['model']}, G={result['group_size']}, r={result['ratio']:g} "
        f"({result['per_item'][0]['kept']} kept tokens), {result['iterations']} iteration(s) per item"
    )
    items = Table(title=title, min_width=len(title) + 4)
    for h in (
        "item",
        "family",
        "answer",
        "acc mean",
        "acc std",
        "dense mean",
        "dense std",
        "acc 0-var",
        "corr",
    ):
        items.add_column(h, justify="left" if h in ("item", "family") else "right")
    for r in result["per_item"]:
        items.add_row(
            r["item"],
            str(r["family"]),
            r["solution"],
            f(r["accuracy_mean"], "{:.3f}"),
            f(r["accuracy_std"], "{:.3f}"),
            f(r["dense_mean"], "{:.3f}"),
            f(r["dense_std"], "{:.4f}"),
            f"{r['accuracy_zero_var']}/{result['iterations']}",
            f(r["corr"], "{:+.2f}"),
        )
    title = (
        f"dense vs accuracy reward — {result['device']}, {result['environment']['torch_threads']} thread(s); "
        f"sampling {f(result['sampling_ms_per_iteration'])} ms/iteration"
    )
    summary = Table(title=title, min_width=len(title) + 4)
    heads = (
        "reward",
        "mean",
        "within-group std",
        "0-var groups",
        "0-var token",
        "0-var frame",
        "ms / iteration",
        "ms / rollout",
    )
    for h in heads:
        summary.add_column(h, justify="left" if h == "reward" else "right")
    for s in result["summary"]:
        summary.add_row(
            s["reward"],
            f(s["mean"], "{:.3f}"),
            f(s["within_group_std"], "{:.4f}"),
            f(_pct(s["zero_var_fraction"]), "{:.0f}%"),
            f(_pct(s["zero_var_fraction_token"]), "{:.0f}%"),
            f(_pct(s["zero_var_fraction_frame"]), "{:.0f}%"),
            f(s["ms_per_iteration"]),
            f(s["ms_per_rollout"]),
        )
    return items, summary


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def main(argv: Sequence[str] | None = None, *, adapter=None) -> dict[str, Any]:
    """Run the benchmark, print both tables and return the result."""
    return benchutil.run_script(build_parser, run, render, argv, adapter)


if __name__ == "__main__":
    main()
