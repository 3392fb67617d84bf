"""`cacovid train`: train a CaCoVID policy against a frozen video LLM.

The command is the callback of this sub-app, so `app.add_typer(train.app, name="train")` gives
`cacovid train --model toy --data synthetic --out runs/x` directly. Heavy imports happen inside.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    pass

app = typer.Typer(add_completion=False)


def _validation_selection(val_selection: str | None, init_policy: str | None) -> dict:
    """Selection options for validation: a policy folder's selection.json, or docs/method.md §3's
    defaults."""
    from cacovid.evaluate.methods import selection_options

    if val_selection == "defaults":
        return {}
    source = val_selection or init_policy
    if source is None:
        return {}
    if not Path(source).is_dir():
        raise typer.BadParameter(f"--val-selection: policy folder {source} does not exist")
    return selection_options(source)


@app.callback(invoke_without_command=True)
def train(
    model: str = typer.Option("toy", help="video LLM name or path (see cacovid.models.load_video_llm)"),
    data: str = typer.Option("synthetic", help="'synthetic' or a Video-R1 JSON file"),
    world: str = typer.Option(None, help="synthetic world overrides KEY=VALUE[,KEY=VALUE…]"),
    split: str = typer.Option("train", help="synthetic split to train on"),
    n_items: int = typer.Option(None, help="number of training items (synthetic default 200)"),
    val_data: str = typer.Option(None, help="validation Video-R1 JSON (default: synthetic 'val' split)"),
    val_items: int = typer.Option(32, help="number of validation items (0: no validation)"),
    out: str = typer.Option("runs/cacovid", help="output directory"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from OUT/checkpoint"),
    init_policy: str = typer.Option(None, help="start from a saved policy instead of a fresh one"),
    val_selection: str = typer.Option(
        None,
        help="policy folder whose selection.json validation uses (default: --init-policy's; "
        "'defaults': α 0.5 with the even fill, docs/method.md §3)",
    ),
    novelty_weight: float = typer.Option(
        None,
        help="weight of the policy's temporal-novelty prior (PolicyConfig.novelty_weight; default: "
        "--init-policy's, 0 for a fresh policy, i.e. the policy of docs/method.md §2)",
    ),
    group_size: int = typer.Option(32, help="rollouts G per iteration"),
    ratio: float = typer.Option(0.02, help="initial training retention r"),
    ratio_min: float = typer.Option(0.01),
    ratio_max: float = typer.Option(0.12),
    adapt_ratio: bool = typer.Option(True, "--adapt-ratio/--fixed-ratio"),
    iterations: int = typer.Option(5, help="iterations I per item"),
    band_group: int = typer.Option(2, help="band group size g"),
    band_beta: float = typer.Option(2.0, help="band cap β"),
    frame_fraction: float = typer.Option(0.125, help="frame-mode fraction f"),
    frame_share: float = typer.Option(0.25, help="share of the G rollouts drawn in frame mode"),
    lr: float = typer.Option(1e-4, help="head learning rate (copied layer: --layer-lr-scale × lr)"),
    layer_lr_scale: float = typer.Option(0.1, help="copied-layer learning rate, as a multiple of --lr"),
    epochs: int = typer.Option(1),
    seed: int = typer.Option(0),
    reward: str = typer.Option("accuracy", help="accuracy | mc | numeric | rouge | regression | dense"),
    kl_coef: float = typer.Option(
        0.0, help="weight of KL(π ‖ Bernoulli(0.5)); > 0 keeps keep-probabilities from saturating"
    ),
    advantage_eps: float = typer.Option(
        1e-4, help="ε in A = (R − mean)/(std + ε); ~0.05 keeps near-constant dense-reward groups quiet"
    ),
    checkpoint_every: int = typer.Option(50),
    val_every: int = typer.Option(50),
    val_ratios: str = typer.Option("0.25,0.1", help="comma-separated validation ratios"),
    blind_filter: bool = typer.Option(True, "--blind-filter/--no-blind-filter"),
    device: str = typer.Option("cpu"),
    threads: int = typer.Option(None, help="torch CPU threads (1 is fastest for tiny models on busy CPUs)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a CaCoVID policy (docs/method.md §4); writes OUT/log.jsonl, OUT/checkpoint/, OUT/policy/."""
    import json

    from rich.console import Console
    from rich.table import Table

    from cacovid.data.sources import source_from_args
    from cacovid.models import load_video_llm
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.config import TrainConfig
    from cacovid.train.trainer import Trainer
    from cacovid.types import parse_ratios

    console = Console(stderr=True)
    out = Path(out)
    try:  # an empty list turns validation off, as --val-items 0 does
        val_ratio_list = tuple(parse_ratios(val_ratios)) if val_ratios.strip() else ()
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--val-ratios") from e
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    try:
        config = TrainConfig(
            group_size=group_size,
            ratio=ratio,
            ratio_min=min(ratio_min, ratio),
            ratio_max=max(ratio_max, ratio),
            adapt_ratio=adapt_ratio,
            iterations=iterations,
            band_group=band_group,
            band_beta=band_beta,
            frame_fraction=frame_fraction,
            frame_share=frame_share,
            lr=lr,
            layer_lr_scale=layer_lr_scale,
            epochs=epochs,
            seed=seed,
            reward=reward,
            kl_coef=kl_coef,
            advantage_eps=advantage_eps,
            checkpoint_every=checkpoint_every,
            val_every=val_every,
            val_ratios=val_ratio_list,
            blind_filter=blind_filter,
        )
        # Training and tuning do not key anything by item id, so a file's ids may repeat.
        source = source_from_args(
            data, split=split, world=world, n=n_items, synthetic_n=200, unique_ids=False
        )
        train_items, world_cfg = source.sequence, source.world
        if val_items <= 0:
            vals: Sequence = []
        elif val_data:
            vals = source_from_args(val_data, split="val", n=val_items, unique_ids=False).sequence
        elif data == "synthetic":
            vals = source_from_args("synthetic", split="val", world=world, n=val_items).sequence
        else:
            vals = []
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    console.print(f"loading [bold]{model}[/bold] …")
    llm = load_video_llm(model, device=device)
    try:
        if init_policy is not None:
            policy = CaCoVIDPolicy.from_pretrained(init_policy, host=llm)
            if novelty_weight is not None:
                policy.config = dataclasses.replace(policy.config, novelty_weight=novelty_weight)
        else:
            policy = CaCoVIDPolicy.from_host(llm, seed=seed, novelty_weight=novelty_weight or 0.0)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    policy.to(device)
    out.mkdir(parents=True, exist_ok=True)
    if world_cfg is not None:
        (out / "world.json").write_text(json.dumps(world_cfg, indent=2))
    selection = _validation_selection(val_selection, init_policy)
    trainer = Trainer(
        llm, policy, config, train_items, vals, out, resume=resume, progress=progress, val_selection=selection
    )
    summary = trainer.fit()
    table = Table(title=f"CaCoVID training — {out}")
    table.add_column("ratio")
    table.add_column("val accuracy")
    table.add_column("evidence recall")
    for row in summary["validation"]:
        rec = row.get("evidence_recall")
        table.add_row(f"{row['ratio']:.3f}", f"{row['accuracy']:.3f}", "-" if rec is None else f"{rec:.3f}")
    console.print(table)
    console.print(
        f"{summary['items_done']} items, {summary['steps']} optimiser steps, final r {summary['ratio']:.3f}; "
        f"policy saved to {out / 'policy'}"
    )
