"""`cacovid distill`: a policy warm start from the host's own question-conditioned attention.

See `cacovid.train.distill` for the loss and why. The result (OUT/policy) is an ordinary saved policy:
evaluate it with `cacovid eval --policy OUT/policy` or train it on with `cacovid train --init-policy`.
"""

from __future__ import annotations

from pathlib import Path

import typer


def distill_command(
    out: Path = typer.Option(..., help="Run folder: log.jsonl, checkpoint/ (resumed), policy/."),
    model: str = typer.Option("toy", help='"toy" or a LLaVA-OneVision / Qwen2(.5)-VL checkpoint folder.'),
    data: str = typer.Option(
        "synthetic", help='"synthetic", a Video-R1 JSON file, or a benchmark NAME:ROOT (docs/benchmarks.md).'
    ),
    world: str = typer.Option("", help="World overrides KEY=VALUE[,KEY=VALUE…] (synthetic data)."),
    n_items: int = typer.Option(400, min=1, help="Training items."),
    val_items: int = typer.Option(32, min=0, help="Synthetic validation items (0: none)."),
    layer: int = typer.Option(2, help="Host decoder layer whose last-token attention is the teacher."),
    temperature: float = typer.Option(1.0, help="Target p ∝ attention^(1/temperature)."),
    epochs: int = typer.Option(1, min=1),
    batch_size: int = typer.Option(8, min=1),
    lr: float = typer.Option(1e-3, help="Learning rate of the heads (the copied layer: × --layer-lr-scale)."),
    layer_lr_scale: float = typer.Option(0.1, min=0.0),
    init_policy: Path = typer.Option(None, help="Start from this saved policy instead of a fresh one."),
    question_match_dim: int = typer.Option(
        0, min=0, help="A fresh policy's question-match width (PolicyConfig.question_match_dim; 0: none)."
    ),
    context_width: int = typer.Option(
        0,
        min=0,
        help="A fresh policy's cross-frame context width (PolicyConfig.context_width; 0: none; "
        "needs --question-match-dim).",
    ),
    seed: int = typer.Option(0),
    threads: int = typer.Option(None, help="torch CPU threads."),
    device: str = typer.Option("cpu"),
) -> None:
    """Distil the host's last-token attention into a CaCoVID policy (resumable)."""
    import torch
    from rich.progress import Progress

    from cacovid.data.sources import source_from_args
    from cacovid.models import load_video_llm
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.distill import DistillConfig, distill_policy

    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        config = DistillConfig(
            layer=layer,
            temperature=temperature,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            layer_lr_scale=layer_lr_scale,
            seed=seed,
        )
        items = source_from_args(data, split="train", world=world, n=n_items, unique_ids=False).sequence
        vals = (
            source_from_args("synthetic", split="val", world=world, n=val_items).sequence
            if val_items and data == "synthetic"
            else []
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if context_width and not question_match_dim and init_policy is None:
        raise typer.BadParameter(
            "the context term needs --question-match-dim > 0", param_hint="--context-width"
        )
    if init_policy is not None and not Path(init_policy).is_dir():
        raise typer.BadParameter(f"no saved policy at {init_policy}", param_hint="--init-policy")
    llm = load_video_llm(model, device=device)
    n_layers = int(llm.text_config.num_hidden_layers)
    if not -n_layers <= layer < n_layers:
        raise typer.BadParameter(f"the host has {n_layers} decoder layers, got {layer}", param_hint="--layer")
    policy = (
        CaCoVIDPolicy.from_pretrained(init_policy, host=llm)
        if init_policy is not None
        else CaCoVIDPolicy.from_host(
            llm, seed=seed, question_match_dim=question_match_dim, context_width=context_width
        )
    ).to(llm.device)
    with Progress() as bar:
        task = bar.add_task("distill", total=None)

        def show(record: dict) -> None:
            bar.update(task, completed=record["step"], total=record["total"])
            if "val" in record:
                bar.console.print(f"step {record['step']} loss {record['loss']:.3f} val {record['val']}")

        distill_policy(policy, llm, items, out, config, val_items=vals, on_step=show)
    typer.echo(f"policy saved to {out / 'policy'}")
