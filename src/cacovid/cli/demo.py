"""`cacovid demo`: the main job on the embedded default, end to end.

Loads the embedded toy video LLM, gets a CaCoVID policy (the one shipped with the package for the
chosen world preset, or a fresh one trained in this run with `--retrain`), evaluates it against
random and uniform selection, its own temporal-novelty prior alone (`selectors/novelty.py`) and the
question-aware `relevance` heuristic at several retention ratios on the synthetic test split, and
writes a report folder: summary.json and items.jsonl (the result-file contract), report.md with the
table, a plot of accuracy vs retention, token heat-maps, and the policy itself beside them. Where the
world asks counterfactual questions (`preset=decoys`), the table also shows question sensitivity.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer

from cacovid.data.synthetic.config import DEFAULT_WORLD

# The world `cacovid demo` runs on without --world: every command's default world, the one where only
# the question tells which of the objects that come and go matters (data/synthetic/config.py).
DEMO_WORLD = DEFAULT_WORLD
# Policies shipped for the toy model, by world preset (folders under policy/shipped/).
SHIPPED_POLICIES = {"classic": "toy", "decoys": "toy-decoys"}
# How the decoys policy was made (recipes/toy/cacovid-decoys/distill.json): its terms and the
# distillation settings; `--retrain` on the decoys world repeats it on its own items.
DECOYS_POLICY = {"question_match_dim": 48, "context_width": 32}
DECOYS_DISTILL = {"teacher": "evidence", "layer": 2, "epochs": 3, "lr": 3e-3, "layer_lr_scale": 1.0}


def shipped_policy_dir(preset: str) -> Path:
    """The policy trained for the toy model on world `preset`, shipped inside the package (the
    classic world's for a preset without one of its own)."""
    from importlib import resources

    return Path(str(resources.files("cacovid.policy"))) / "shipped" / SHIPPED_POLICIES.get(preset, "toy")


def shipped_novelty_weight() -> float:
    """The novelty-prior weight of the policy shipped for the classic world, whose RL recipe
    `--retrain` repeats on worlds without decoys (0 when none is shipped)."""
    from cacovid.policy import PolicyConfig

    path = shipped_policy_dir("classic") / "config.json"
    return PolicyConfig.load(path).novelty_weight if path.is_file() else 0.0


def _distill_policy(adapter, out: Path, n_items: int, world: str, seed: int, progress: bool) -> Path:
    """The recipe of the policy shipped for the decoys world, on fewer items: a fresh policy with the
    question-match and cross-frame context terms, distilled from the items' annotated evidence
    (docs/experiments.md, "The policy shipped for the decoys world")."""
    from cacovid.data.sources import source_from_args
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.distill import DistillConfig, distill_policy

    items = source_from_args("synthetic", split="train", world=world or None, n=n_items).sequence
    policy = CaCoVIDPolicy.from_host(adapter, seed=seed, **DECOYS_POLICY)
    run = out / "policy-training"
    distill_policy(policy, adapter, items, run, DistillConfig(seed=seed, **DECOYS_DISTILL))
    return run / "policy"


def _train_policy(adapter, out: Path, n_items: int, world: str, seed: int, progress: bool) -> Path:
    from cacovid.data.sources import source_from_args
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.config import TrainConfig
    from cacovid.train.trainer import Trainer

    train_items = source_from_args("synthetic", split="train", world=world or None, n=n_items).sequence
    val_items = source_from_args("synthetic", split="val", world=world or None, n=32).sequence
    # The recipe of the shipped policy (README), for a short CPU run: dense reward (probability of the
    # right option, one teacher-forced pass), a fixed training retention of 6 %, KL to Bernoulli(½)
    # so the keep-probabilities do not saturate, and a higher head learning rate than the paper's 1e-4.
    config = TrainConfig(
        seed=seed,
        checkpoint_every=25,
        val_every=max(25, n_items // 2),
        reward="dense",
        lr=5e-4,
        ratio=0.06,
        adapt_ratio=False,
        kl_coef=0.1,
    )
    # The shipped policy's temporal-novelty prior too, so a retrained policy is the same kind of policy.
    policy = CaCoVIDPolicy.from_host(adapter, seed=seed, novelty_weight=shipped_novelty_weight())
    run = out / "policy-training"
    Trainer(adapter, policy, config, train_items, val_items, run, progress=progress).fit()
    return run / "policy"


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), help="Report folder (resumed if it exists)."),
    model: str = typer.Option("toy", help='Video LLM: "toy" (embedded) or a checkpoint folder.'),
    retrain: bool = typer.Option(
        False, "--retrain/--shipped", help="Train a fresh policy here (default when none is shipped)."
    ),
    train_items: int = typer.Option(150, min=1, help="Training items when retraining."),
    n: int = typer.Option(200, min=1, help="Test items to evaluate."),
    ratios: str = typer.Option("0.25,0.2,0.15,0.1,0.05", help="Retention ratios."),
    methods: str = typer.Option(
        "random,uniform,novelty,relevance",
        help="Baselines to compare against (or 'all'); 'novelty' is the shipped policy's prior alone, "
        "'relevance' a training-free question-aware heuristic.",
    ),
    world: str = typer.Option(
        DEMO_WORLD,
        help="World KEY=VALUE[,KEY=VALUE…]; keys without a preset change the default preset=decoys; "
        "preset=classic for the classic world; a preset with a shipped policy uses it.",
    ),
    split: str = typer.Option("test", help="Split to evaluate on."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch CPU threads (1 is fastest for the tiny model)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train or load a CaCoVID policy for the toy model, compare it with baselines, write a report."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from cacovid.data.sources import source_from_args
    from cacovid.data.synthetic import WorldConfig
    from cacovid.evaluate import EvalConfig, build_methods, build_report, parse_methods, run_evaluation
    from cacovid.models import load_video_llm
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.types import parse_ratios

    console = Console()
    torch.set_num_threads(max(1, threads))
    t0 = time.time()
    try:
        ratio_list = parse_ratios(ratios)
        names = parse_methods(["cacovid", *methods.split(",")], policy=True)
        source = source_from_args("synthetic", split=split, world=world or None, n=n)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    world_config = WorldConfig.from_dict(source.world)  # the resolved world, preset=decoys by default
    preset = world_config.preset_name
    # A world with decoys gets the decoys policy's recipe (distillation), any other the classic one (RL).
    has_decoys = world_config.num_decoys > 0
    out.mkdir(parents=True, exist_ok=True)
    adapter = load_video_llm(model)
    policy_dir = out / "policy"
    if not (policy_dir / "config.json").is_file():
        shipped = shipped_policy_dir(preset or "classic")
        if retrain or model != "toy" or preset is None or not (shipped / "config.json").is_file():
            how = "distilling" if has_decoys else "training"
            console.print(f"{how} a CaCoVID policy on {train_items} items …")
            train = _distill_policy if has_decoys else _train_policy
            trained = train(adapter, out, train_items, world, seed, progress)
        else:
            trained = shipped
            console.print(f"using the shipped policy ({trained})")
        CaCoVIDPolicy.from_pretrained(trained, host=adapter).save_pretrained(policy_dir)
        from cacovid.evaluate.methods import SELECTION_FILE

        if (Path(trained) / SELECTION_FILE).is_file():  # the inference settings tuned for this policy
            shutil.copyfile(Path(trained) / SELECTION_FILE, policy_dir / SELECTION_FILE)
    t_train = time.time() - t0
    built = build_methods(names, adapter, policy=str(policy_dir), seed=seed)
    config = EvalConfig(ratios=ratio_list, seed=seed)
    console.print(f"evaluating {', '.join(names)} at {ratios} on {n} {split} items …")
    summary = run_evaluation(adapter, source, built, out, config, model=model)
    build_report(out, note=f"`cacovid demo` on model {model!r}, synthetic {split} split, {n} items.")
    t_total = time.time() - t0

    table = Table(title=f"CaCoVID vs baselines — {model}, synthetic:{split}, n={summary.get('n_items')}")
    sensitive = any(row.get("question_sensitivity") is not None for row in summary["rows"])
    columns = ["method", "ratio", "accuracy", "% of full", "evidence recall"]
    columns += ["question sensitivity (base rate)"] if sensitive else []
    for col in [*columns, "compression ms"]:
        table.add_column(col, justify="right" if col != "method" else "left")
    for row in summary["rows"]:
        rec, qs = row.get("evidence_recall"), row.get("question_sensitivity")
        cells = [
            row["method"],
            f"{row['ratio']:.2f}",
            f"{row['accuracy']:.3f}",
            "-" if row.get("pct_of_full") is None else f"{row['pct_of_full']:.1f}",
            "-" if rec is None else f"{rec:.3f}",
        ]
        if sensitive:
            cells.append("-" if qs is None else f"{qs:.3f} ({row['question_base_rate']:.3f})")
        table.add_row(*cells, f"{row.get('compression_ms') or 0.0:.2f}")
    console.print(table)
    console.print(
        f"policy {t_train:.0f} s, total {t_total:.0f} s; report: {out / 'report.md'}; policy: {policy_dir}"
    )
