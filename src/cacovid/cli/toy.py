"""`cacovid toy …`: train, export and evaluate the embedded tiny video LLM.

`toy eval` runs on every command's default world, `preset=decoys`. `toy train`'s `--world`,
`--mix-worlds` and `--val-world` start from the classic world instead (`TOY_TRAIN_PRESET`, whose
comment says why): the from-scratch recipe trains on classic's question families, and a checkpoint
resumed by the same command must keep its world.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("train")
def train_command(
    out: Path = typer.Option(
        Path("runs/toy"), help="Run folder: checkpoint.pt, log.jsonl (resumed if present)."
    ),
    world: str = typer.Option(
        "",
        help="World to train and validate on, KEY=VALUE[,KEY=VALUE…]; keys without a preset change "
        "the classic world for toy training (unlike the other commands' preset=decoys default).",
    ),
    seed: int = typer.Option(0, help="Seed for initialisation, data order and token dropout."),
    vision_steps: int = typer.Option(
        2000, help="Stage 1 steps (vision tower + projector, dense auxiliary loss)."
    ),
    qa_steps: int = typer.Option(2500, help="Stage 2 steps (whole model, answer + auxiliary loss)."),
    batch_size: int = typer.Option(8),
    max_minutes: float = typer.Option(
        None, help="Stop (checkpointed) after this many minutes; rerun to resume."
    ),
    export: Path = typer.Option(None, help="When training is complete, export the HF checkpoint here."),
    threads: int = typer.Option(1, help="torch CPU threads (1 is fastest for the tiny model on a busy CPU)."),
    device: str = typer.Option("cpu", help='torch device to train on ("cpu", "cuda").'),
    workers: int = typer.Option(0, min=0, help="Data worker processes rendering batches ahead (0: inline)."),
    qa_minutes: float = typer.Option(
        None, help="Size stage 2 to about this many minutes from the measured pace (overrides --qa-steps)."
    ),
    lr: float = typer.Option(1e-3, help="Peak learning rate of the language model."),
    vision_lr: float = typer.Option(1e-3, help="Peak learning rate of the vision tower and projector."),
    aux_weight: float = typer.Option(
        0.5,
        min=0.0,
        help="Weight of the dense auxiliary loss (colour, shape, position, word alignment) of the probe.",
    ),
    track_weight: float = typer.Option(
        0.5, min=0.0, help="Weight of the probe's motion and running-count loss at the grounding layer."
    ),
    family_weights: str = typer.Option(
        "", help='Family shares in training batches, e.g. "count=0.5,color=0.2,motion=0.15,order=0.15".'
    ),
    init_from: Path = typer.Option(
        None,
        help="Start from these weights (weights_state.pt, checkpoint.pt, or an exported folder) instead of "
        "from scratch. An exported folder carries no auxiliary probe: with --aux-weight/--track-weight "
        "above 0 a fresh probe's gradients reach the model, so fine-tunes from an export set both to 0.",
    ),
    val_every: int = typer.Option(500, min=1, help="Validate every this many steps."),
    checkpoint_every: int = typer.Option(50, min=1, help="Checkpoint every this many steps."),
    evidence_drop_prob: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of pruned prompts that lose part of their evidence (robustness)."
    ),
    object_keep_prob: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of pruned prompts that keep whole distractor objects in some frames.",
    ),
    mix_worlds: str = typer.Option(
        "",
        help='Train on several worlds: "WORLD@WEIGHT;WORLD@WEIGHT", e.g. '
        '"preset=classic@1;preset=decoys,frames=32@1" (each step draws one world; a WORLD without a '
        "preset changes the classic world).",
    ),
    val_world: list[str] = typer.Option(
        [], help="Also validate on this world (classic unless it names a preset); repeatable."
    ),
) -> None:
    """Train the toy LLaVA-OneVision from scratch on the synthetic world (checkpoint + exact resume)."""
    from cacovid.data.synthetic.config import parse_world_overrides
    from cacovid.toy.config import ToyTrainConfig
    from cacovid.toy.train import ToyTrainer

    cfg = ToyTrainConfig(
        out_dir=str(out),
        seed=seed,
        world=parse_world_overrides(world),
        vision_steps=vision_steps,
        qa_steps=qa_steps,
        batch_size=batch_size,
        threads=threads,
        device=device,
        workers=workers,
        qa_minutes=qa_minutes,
        lr=lr,
        vision_lr=vision_lr,
        aux_weight=aux_weight,
        track_weight=track_weight,
        init_from=str(init_from) if init_from else None,
        family_weights={k: float(v) for k, v in parse_world_overrides(family_weights).items()} or None,
        val_every=val_every,
        checkpoint_every=checkpoint_every,
        evidence_drop_prob=evidence_drop_prob,
        object_keep_prob=object_keep_prob,
        mix_worlds=_parse_mix(mix_worlds),
        val_worlds=list(val_world),
    )
    trainer = ToyTrainer(cfg)
    if trainer.step:
        typer.echo(f"resuming {out} at step {trainer.step}")
    trainer.fit(max_minutes=max_minutes)
    done = trainer.step >= cfg.vision_steps + cfg.qa_steps
    if export is not None and done:
        trainer.export(export)
        typer.echo(f"exported to {export}")
    elif not done:
        typer.echo(f"stopped at step {trainer.step}; run the same command again to resume")


def _parse_mix(text: str) -> dict[str, float] | None:
    """'preset=classic@1;preset=decoys@2' -> {'preset=classic': 1.0, 'preset=decoys': 2.0}."""
    from cacovid.data.synthetic.config import world_from_overrides
    from cacovid.toy.config import TOY_TRAIN_PRESET

    if not text.strip():
        return None
    out: dict[str, float] = {}
    for part in text.split(";"):
        world, sep, weight = part.strip().rpartition("@")
        if not sep:
            raise typer.BadParameter(
                f"mix entry {part!r} must look like WORLD@WEIGHT", param_hint="--mix-worlds"
            )
        try:
            out[world] = float(weight)
            world_from_overrides(world, TOY_TRAIN_PRESET)
        except ValueError as err:
            raise typer.BadParameter(f"mix entry {part!r}: {err}", param_hint="--mix-worlds") from None
    return out


@app.command("eval")
def eval_command(
    out: Path = typer.Option(Path("runs/toy-eval"), help="Results folder (summary.json, items.jsonl)."),
    n: int = typer.Option(200, min=1, help="Number of items."),
    model: str = typer.Option("toy", help='"toy" (the shipped model) or an exported checkpoint folder.'),
    split: str = typer.Option("test", help="Synthetic split."),
    world: str = typer.Option(
        "",
        help="World KEY=VALUE[,KEY=VALUE…]; default preset=decoys, whose values other keys change; "
        "preset=classic[,KEY=VALUE…] for the classic world.",
    ),
    seed: int = typer.Option(0, help="Seed of the random-selection row."),
) -> None:
    """Quality rows of the toy model: full, blind, oracle, random at 10 % (schema of `cacovid eval`)."""
    from cacovid.cli.eval import eval_command as run_eval

    run_eval(
        model=model,
        split=split,
        world=world,
        methods="random",
        ratios="0.1",
        n=n,
        out=out,
        efficiency=False,
        seed=seed,
        report=False,
    )
