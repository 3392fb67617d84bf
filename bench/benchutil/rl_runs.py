"""Shared machinery of the RL training benchmarks (`convergence.py`, `reward.py`): short, identical
training runs of the library's own `Trainer`, each with a validation curve and measured counters, and
the statistics of reward groups (`group_stats`, also used by `diagnostics/reward_variance.py`).

A run trains a policy with `cacovid.train.Trainer` (nothing of the loop is re-implemented here) and
records, at every validation point, the items, optimiser steps and **host rollouts** done so far
(the rows the frozen model answered for rewards, counted by a wrapper around the reward function,
not computed from G) beside the validation accuracy and evidence recall at the validation
retention. The curve starts with a validation of the starting policy. Wall time is split into
validation (the trainer's `validate`, wrapped and timed) and training (the rest of `fit`), and the
reward calls inside training are timed on their own. Items are encoded by the frozen model once,
before the first run (`CachedEncodings`), so no run's time includes encoding.

Every run of a benchmark uses the same training items (the first `--train-items` of the world's
train split that the host does not answer blind, filtered once, as `cacovid train` does before
training), the same validation items, the same G, I and a fixed training retention, so the runs
differ only in what is compared (sampler or reward) and the seed (policy heads and rollout draws).
Each finished run is saved as `WORK/<name>.json`: an interrupted benchmark resumes from them.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import benchutil

WORLD = "preset=decoys"
QUESTION_MATCH_DIM = 48  # the question-match width of the shipped decoys policy


def add_run_args(ap: argparse.ArgumentParser, *, train_items: int, val_every: int, seeds: int) -> None:
    """The options every RL benchmark shares (one definition, the same names everywhere)."""
    ap.add_argument("--model", default="toy", help="toy | tiny | micro | checkpoint")
    ap.add_argument("--world", default=WORLD, help="synthetic world of training and validation items")
    ap.add_argument("--train-items", type=int, default=train_items, help="training items per run")
    ap.add_argument("--val-items", type=int, default=48, help="validation items (val split)")
    ap.add_argument("--val-every", type=int, default=val_every, help="validate every this many items")
    ap.add_argument("--ratio", type=float, default=0.1, help="training and validation retention")
    ap.add_argument("--group-size", type=int, default=8, help="rollouts G per iteration")
    ap.add_argument("--iterations", type=int, default=4, help="iterations I (optimiser steps) per item")
    ap.add_argument("--lr", type=float, default=1e-3, help="head learning rate")
    ap.add_argument("--kl-coef", type=float, default=0.0, help="TrainConfig.kl_coef")
    ap.add_argument("--seeds", type=int, default=seeds, help="seeds per compared setting (0, 1, …)")
    ap.add_argument(
        "--init-policy",
        default=None,
        help="start every run from this saved policy (default: a fresh policy from the host with the "
        f"question-match term, width {QUESTION_MATCH_DIM})",
    )
    ap.add_argument(
        "--novelty-weight",
        type=float,
        default=0.0,
        help="temporal-novelty prior weight of a fresh policy (PolicyConfig.novelty_weight)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--work", default=None, help="folder of finished runs (resumable; default: temporary)")
    ap.add_argument("--out", "--json", dest="json", default=None, help="also write the result to this JSON")
    ap.add_argument("--quick", action="store_true", help="seconds: 2 training items, 2 val items, 1 seed")


def apply_quick(args: argparse.Namespace) -> None:
    """`--quick`: the smallest run that still has every part (a start point and two later ones)."""
    if args.quick:
        args.train_items, args.val_items, args.val_every = 2, 2, 1
        args.group_size, args.iterations, args.seeds = 4, 1, 1


def check_args(args: argparse.Namespace) -> None:
    for name in ("train_items", "val_items", "val_every", "group_size", "iterations", "seeds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.ratio <= 1:
        raise SystemExit(f"--ratio must be in (0, 1], got {args.ratio}")
    if not args.lr > 0:
        raise SystemExit(f"--lr must be > 0, got {args.lr}")
    if args.init_policy is not None and not (Path(args.init_policy) / "config.json").is_file():
        raise SystemExit(f"--init-policy: no saved policy at {args.init_policy}")


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields every run of a benchmark shares, over the paper's recipe
    (`TrainConfig.paper()`; each setting overrides what it compares).

    The training retention is fixed at the validation ratio: the adaptation of docs/method.md §4.3
    reads the token-mode reward (a frame-only run has none) and would give the compared runs
    different kept counts per rollout, so different budgets.
    """
    return dict(
        group_size=args.group_size,
        iterations=args.iterations,
        ratio=args.ratio,
        ratio_min=args.ratio,
        ratio_max=args.ratio,
        adapt_ratio=False,
        lr=args.lr,
        kl_coef=args.kl_coef,
        warmup_fraction=0.0,
        val_every=args.val_every,
        val_ratios=(args.ratio,),
        checkpoint_every=10**9,
        blind_filter=False,  # filtered once for every run (`training_items`)
    )


def training_items(adapter, world: str, n: int, *, batch_size: int = 16) -> tuple[list, int]:
    """The first `n` train-split items the host does not answer blind, and how many were tested.

    Candidates are drawn in growing batches until `n` survive (the blind test of `cacovid train`,
    done once here so every run trains on the same items without paying for it again).
    """
    from cacovid.train.validation import blind_filter

    kept: list = []
    tested = 0
    while len(kept) < n:
        want = tested + max(4, math.ceil((n - len(kept)) * 1.5))
        candidates = benchutil.synthetic_items(want, world, "train")[tested:]
        if not candidates:
            break
        keep = blind_filter(adapter, candidates, batch_size=batch_size)
        kept += [candidates[i] for i in keep]
        tested = want
        if tested > 20 * n + 100:
            raise SystemExit(f"the host answers nearly every {world} item blind: too few to train on")
    return kept[:n], tested


class CachedEncodings:
    """The adapter, with `encode_item` memoised by item: every run trains and validates on the same
    items, and encoding them (the frozen vision tower) costs more than a validation pass, so it is
    done once for all runs, before the first (so no run's time includes it). Everything else is the
    adapter's own."""

    def __init__(self, adapter) -> None:
        self._adapter = adapter
        self._cache: dict[tuple, Any] = {}

    def encode_item(self, item, **kwargs: Any):
        if kwargs.get("features") is not None:  # another question over features already computed
            return self._adapter.encode_item(item, **kwargs)
        key = (str(item.id), item.problem, tuple(sorted(kwargs.items())))
        if key not in self._cache:
            self._cache[key] = self._adapter.encode_item(item, **kwargs)
        return self._cache[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)


# Setting fields that choose the starting policy rather than the TrainConfig: how a fresh policy's
# question-match term starts ("zero", or "query": the label-free prior of the decoys recipe).
POLICY_FIELDS = ("question_match_init",)


def make_policy(
    adapter,
    seed: int,
    init_policy: str | None,
    novelty_weight: float = 0.0,
    question_match_init: str = "zero",
):
    """The starting policy: a saved one, or a fresh one from the host with the question-match term
    (the term that lets a policy read the question, docs/method.md §8) and the given prior weight."""
    from cacovid.policy import CaCoVIDPolicy

    if init_policy is not None:
        policy = CaCoVIDPolicy.from_pretrained(init_policy, host=adapter)
    else:
        policy = CaCoVIDPolicy.from_host(
            adapter,
            seed=seed,
            question_match_dim=QUESTION_MATCH_DIM,
            novelty_weight=novelty_weight,
            question_match_init=question_match_init,
        )
    return policy.to(adapter.device)


def validation_selection(init_policy: str | None) -> dict[str, Any]:
    """The selection validation runs with, as in `cacovid train`: a saved policy's `selection.json`,
    else the defaults of docs/method.md §3."""
    if init_policy is None:
        return {}
    from cacovid.policy.settings import selection_options

    return selection_options(init_policy)


@dataclass
class RewardMeter:
    """Wraps a rollout reward: counts host rows and calls, times them and keeps every group's rewards."""

    fn: Callable
    rows: int = 0
    calls: int = 0
    seconds: float = 0.0
    cumulative: list[int] = field(default_factory=list)  # rows after each call (monotone)
    groups: list[torch.Tensor] = field(default_factory=list)

    def __call__(self, adapter, rows: Sequence, item) -> torch.Tensor:
        start = time.perf_counter()
        out = self.fn(adapter, rows, item)
        self.seconds += time.perf_counter() - start
        self.rows += len(rows)
        self.calls += 1
        self.cumulative.append(self.rows)
        self.groups.append(out.detach().float().cpu().reshape(-1))
        return out


def train_run(
    adapter,
    name: str,
    seed: int,
    config_fields: dict[str, Any],
    train: Sequence,
    val: Sequence,
    init_policy: str | None,
    novelty_weight: float = 0.0,
    val_selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One training run: its validation curve, counters and timings (see the module docstring).
    `val_selection`: the selection validation runs with (default: `validation_selection(init_policy)`)."""
    from cacovid.train.config import TrainConfig
    from cacovid.train.rewards import rollout_reward
    from cacovid.train.sampling import mode_counts
    from cacovid.train.trainer import Trainer

    policy_start = {k: v for k, v in config_fields.items() if k in POLICY_FIELDS}
    config = TrainConfig.paper(
        **{k: v for k, v in config_fields.items() if k not in POLICY_FIELDS}, seed=seed
    )
    meter = RewardMeter(rollout_reward(config.reward, config.max_new_tokens))
    policy = make_policy(adapter, seed, init_policy, novelty_weight, **policy_start)
    with tempfile.TemporaryDirectory(prefix=f"cacovid-rl-{name}-") as tmp:
        trainer = Trainer(
            adapter,
            policy,
            config,
            train,
            val,
            tmp,
            reward_fn=meter,
            resume=False,
            progress=False,
            val_selection=validation_selection(init_policy) if val_selection is None else val_selection,
        )
        val_seconds = [0.0]
        validate = trainer.validate

        def timed_validate() -> list[dict[str, Any]]:
            start = time.perf_counter()
            rows = validate()
            val_seconds[0] += time.perf_counter() - start
            return rows

        trainer.validate = timed_validate  # fit() calls it through the instance
        Path(tmp).mkdir(parents=True, exist_ok=True)
        start_rows = trainer.validate()
        val_before = val_seconds[0]
        start = time.perf_counter()
        summary = trainer.fit()
        fit_seconds = time.perf_counter() - start
        log = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    items = [r for r in log if r["event"] in ("item", "item_error")]
    I, ratio = config.iterations, config.val_ratios[0]
    points = [_point(0, 0, 0, start_rows, ratio)]
    for r in log:
        if r["event"] != "val" or abs(r["ratio"] - ratio) > 1e-9:
            continue
        n = int(r["items_done"])
        # Host rows answered once the n-th item's I reward calls were made (a failed item may have
        # made fewer: then the count so far); one optimiser step per iteration of a round of items.
        rollouts = meter.cumulative[min(n * I, len(meter.cumulative)) - 1] if meter.cumulative else 0
        points.append(_point(n, math.ceil(n / config.items_per_step) * I, rollouts, [r], ratio))
    train_seconds = fit_seconds - (val_seconds[0] - val_before)
    n_items = int(summary["items_done"])
    return {
        "name": name,
        "seed": seed,
        "config": {**config.to_dict(), **policy_start},
        "mode_counts": list(mode_counts(config)),
        "curve": points,
        "final_accuracy": points[-1]["accuracy"],
        "items": n_items,
        "steps": int(summary["steps"]),
        "rollouts": meter.rows,
        "reward_calls": meter.calls,
        "item_errors": sum(1 for r in items if r["event"] == "item_error"),
        "fit_seconds": fit_seconds,
        "validation_seconds": val_seconds[0],
        "train_seconds": train_seconds,
        "train_seconds_per_item": train_seconds / max(n_items, 1),
        "reward_seconds": meter.seconds,
        "rewards": [g.tolist() for g in meter.groups],
    }


def _point(items: int, steps: int, rollouts: int, rows: list[dict[str, Any]], ratio: float) -> dict[str, Any]:
    row = next(r for r in rows if abs(r["ratio"] - ratio) < 1e-9)
    return {
        "items": items,
        "steps": steps,
        "rollouts": rollouts,
        "accuracy": float(row["accuracy"]),
        "evidence_recall": None if row.get("evidence_recall") is None else float(row["evidence_recall"]),
    }


def run_all(
    adapter,
    settings: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    work: Path,
    *,
    progress: Callable[[str], None] = print,
    val_selection: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every (setting, seed) run, in seed-major order; a run already saved in `work` is loaded.

    `settings` maps a name to the TrainConfig fields that set it apart from `base_config(args)`.
    A saved run is reused only if it was made with the same config and items.
    """
    train, tested = training_items(adapter, args.world, args.train_items)
    if len(train) < args.train_items:
        raise SystemExit(f"only {len(train)} of {tested} {args.world} train items are not answered blind")
    val = benchutil.synthetic_items(args.val_items, args.world, "val")
    key = {
        "train": [str(it.id) for it in train],
        "val": [str(it.id) for it in val],
        "init": args.init_policy,
        "novelty_weight": args.novelty_weight,
    }
    work.mkdir(parents=True, exist_ok=True)
    host = CachedEncodings(adapter)
    with torch.no_grad():
        for it in [*train, *val]:
            host.encode_item(it)
    runs = []
    for seed in range(args.seeds):
        for name, fields in settings.items():
            config = {**base_config(args), **fields}
            path = work / f"{name}-seed{seed}.json"
            if path.is_file():
                saved = json.loads(path.read_text())
                if saved.get("key") == key and saved["config"] == {**_config_dict(config), "seed": seed}:
                    runs.append(saved)
                    progress(f"{name} seed {seed}: loaded from {path}")
                    continue
            start = time.perf_counter()
            run = train_run(
                host, name, seed, config, train, val, args.init_policy, args.novelty_weight, val_selection
            )
            run["key"] = key
            path.write_text(json.dumps(run, default=float))
            runs.append(run)
            progress(
                f"{name} seed {seed}: val accuracy {run['curve'][0]['accuracy']:.3f} → "
                f"{run['final_accuracy']:.3f} in {time.perf_counter() - start:.0f} s"
            )
    return runs


def _config_dict(fields: dict[str, Any]) -> dict[str, Any]:
    from cacovid.train.config import TrainConfig

    start = {k: v for k, v in fields.items() if k in POLICY_FIELDS}
    return {
        **TrainConfig.paper(**{k: v for k, v in fields.items() if k not in POLICY_FIELDS}).to_dict(),
        **start,
    }


# ---- reward groups -------------------------------------------------------------------------------
ZERO_STD = 1e-6  # a group whose reward std is below this gives (numerically) no advantage signal


def reward_std(x: torch.Tensor) -> float:
    """Population std of a group's rewards (0 for a single reward)."""
    return float(x.std(unbiased=False)) if x.numel() > 1 else 0.0


def group_stats(rewards: torch.Tensor, modes: torch.Tensor) -> dict[str, Any]:
    """Mean, std and zero-variance flags of one group of G rewards (all / token / frame mode): the
    advantages are normalised within each mode's group, so a flat group gives no learning signal."""
    from cacovid.train.sampling import FRAME, TOKEN

    out: dict[str, Any] = {"mean": float(rewards.mean()), "std": reward_std(rewards)}
    out["zero_var"] = out["std"] < ZERO_STD
    for name, mode in (("token", TOKEN), ("frame", FRAME)):
        sub = rewards[modes == mode]
        out[f"zero_var_{name}"] = None if sub.numel() < 2 else reward_std(sub) < ZERO_STD
    return out


# ---- aggregation ---------------------------------------------------------------------------------
def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean, population std, min and max of the values that are not None (all None when none are)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.pstdev(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def mean_curve(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seeds' curves averaged point by point (the runs share their validation schedule)."""
    lengths = {len(r["curve"]) for r in runs}
    if len(lengths) != 1:
        raise ValueError(f"runs {[r['name'] for r in runs]} have validation curves of different lengths")
    out = []
    for points in zip(*(r["curve"] for r in runs), strict=True):
        recalls = [p["evidence_recall"] for p in points]
        out.append(
            {
                "items": points[0]["items"],
                "steps": points[0]["steps"],
                "rollouts": statistics.fmean(p["rollouts"] for p in points),
                "accuracy": statistics.fmean(p["accuracy"] for p in points),
                "accuracy_min": min(p["accuracy"] for p in points),
                "accuracy_max": max(p["accuracy"] for p in points),
                "evidence_recall": spread(recalls)["mean"],
            }
        )
    return out


def first_reaching(curve: Sequence[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first point of `curve` whose accuracy is at least `target` (None: never)."""
    for p in curve:
        if p["accuracy"] >= target - 1e-12:
            return p
    return None


def summarise(
    runs: Sequence[dict[str, Any]], names: Sequence[str], reference: str, share: float
) -> dict[str, Any]:
    """Per-setting mean curves, start / final / best accuracy over seeds, and the host rollouts each
    needs to reach `share` × the `reference` setting's mean final accuracy (on its seed-mean curve,
    and per seed)."""
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [r for r in runs if r["name"] == name]
        if not mine:
            raise ValueError(f"no runs of {name!r}")
        per[name] = {
            "curve": mean_curve(mine),
            "start": spread([r["curve"][0]["accuracy"] for r in mine]),
            "final": spread([r["final_accuracy"] for r in mine]),
            "best": spread([max(p["accuracy"] for p in r["curve"]) for r in mine]),
            "final_recall": spread([r["curve"][-1]["evidence_recall"] for r in mine]),
            "train_seconds_per_item": spread([r["train_seconds_per_item"] for r in mine]),
            "reward_seconds_per_item": spread([r["reward_seconds"] / max(r["items"], 1) for r in mine]),
            "rollouts": spread([r["rollouts"] for r in mine]),
            "item_errors": sum(r["item_errors"] for r in mine),
            "seeds": [r["seed"] for r in mine],
        }
    ref = per[reference]["final"]["mean"] if reference in per else None
    target = None if ref is None else share * ref
    for name, row in per.items():
        hit = None if target is None else first_reaching(row["curve"], target)
        row["rollouts_to_target"] = None if hit is None else hit["rollouts"]
        row["steps_to_target"] = None if hit is None else hit["steps"]
        row["rollouts_to_target_per_seed"] = [
            None if target is None or (h := first_reaching(r["curve"], target)) is None else h["rollouts"]
            for r in runs
            if r["name"] == name
        ]
    return {
        "per_setting": per,
        "reference": reference,
        "reference_final": ref,
        "share": share,
        "target": target,
    }


def cpu_name() -> str:
    """The CPU model, for absolute times ("2-core x86 CPU" is not enough to compare runs)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    import os

    return {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), **benchutil.environment()}


def curve_table(result: dict[str, Any]):
    """The seed-mean validation curve of every setting, against items, steps and host rollouts."""
    from rich.table import Table

    per = result["summary"]["per_setting"]
    names = list(per)
    title = (
        f"val accuracy at {100 * result['ratio']:g} % ({result['val_items']} items), mean over "
        f"{result['seeds']} seed(s) [min–max]; {result['world']}, G={result['group_size']}, "
        f"I={result['iterations']}"
    )
    curve = Table(title=title, min_width=len(title) + 4)
    for h in ("items", "steps", "rollouts", *names):
        curve.add_column(h, justify="right")
    for i, point in enumerate(per[names[0]]["curve"]):
        cells = [str(point["items"]), str(point["steps"]), f"{point['rollouts']:.0f}"]
        for name in names:
            p = per[name]["curve"][i]
            cells.append(
                f"{100 * p['accuracy']:.1f} [{100 * p['accuracy_min']:.0f}–{100 * p['accuracy_max']:.0f}]"
            )
        curve.add_row(*cells)
    return curve
