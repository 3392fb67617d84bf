"""`cacovid distill`: a policy warm start from the host's own question-conditioned attention.

See `cacovid.train.distill` for the loss and why. `--teacher evidence` distils the items' annotated
evidence instead (synthetic data, or a data set with grounding annotations). The result
(OUT/policy) is an ordinary saved policy: evaluate it with `cacovid eval --policy OUT/policy` or
train it on with `cacovid train --init-policy`.
A run can be a recipe file (`--config PATH.json`): an object of this command's options spelt as Python
names (n_items for --n-items) and a description; options given on the command line win.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cacovid.cli.train import RECIPE_NOTES, read_recipe


def with_recipe(ctx: typer.Context, path: Path | None) -> dict[str, Any]:
    """The command's options as parsed, with the recipe's value for every option not given on the
    command line; each value is checked and converted as the option itself would be."""
    options = dict(ctx.params)
    if path is None:
        return options
    recipe = read_recipe(path)
    params = {p.name: p for p in ctx.command.params if p.name not in ("config", "print_config")}
    unknown = sorted(set(recipe) - set(params) - set(RECIPE_NOTES))
    if unknown:
        raise typer.BadParameter(
            f"unknown recipe keys {unknown}: a recipe holds `cacovid distill` options spelt as Python "
            "names (n_items for --n-items) and a description",
            param_hint="--config",
        )
    for key, value in recipe.items():
        if key in RECIPE_NOTES:
            continue
        source = ctx.get_parameter_source(key)
        if source is not None and source.name == "COMMANDLINE":
            continue  # the command line wins
        default = options[key]
        if isinstance(value, bool) != isinstance(default, bool) or (
            isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float)
        ):
            raise typer.BadParameter(f"recipe key {key!r}: {value!r} is not a {type(default).__name__}")
        try:
            options[key] = None if value is None else params[key].process_value(ctx, value)
        except typer.BadParameter as e:
            raise typer.BadParameter(f"recipe key {key!r}: {e.message}", param_hint="--config") from e
    return options


def distill_command(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", help="Recipe file (.json or .yaml) of these options."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved options as JSON, then stop."
    ),
    out: Path = typer.Option(None, help="Run folder: log.jsonl, checkpoint/ (resumed), policy/."),
    model: str = typer.Option("toy", help='"toy" or a LLaVA-OneVision / Qwen2(.5)-VL checkpoint folder.'),
    data: str = typer.Option(
        "synthetic", help='"synthetic", a Video-R1 JSON file, or a benchmark NAME:ROOT (docs/benchmarks.md).'
    ),
    world: str = typer.Option(
        "",
        help="World KEY=VALUE[,KEY=VALUE…] (synthetic data); default preset=decoys, whose values other "
        "keys change; preset=classic[,KEY=VALUE…] for the classic world.",
    ),
    n_items: int = typer.Option(400, min=1, help="Training items."),
    val_items: int = typer.Option(32, min=0, help="Synthetic validation items (0: none)."),
    teacher: str = typer.Option(
        "attention",
        help='"attention" (the host\'s last-token attention at --layer) or "evidence" (the items\' '
        "annotated evidence tokens).",
    ),
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
    """Distil the host's last-token attention (or the items' evidence) into a CaCoVID policy (resumable)."""
    o = with_recipe(ctx, config)
    if print_config:
        shown = {k: str(v) if isinstance(v, Path) else v for k, v in o.items()}
        shown = {k: v for k, v in shown.items() if k not in ("config", "print_config")}
        typer.echo(json.dumps(shown, indent=2))
        return
    out, model, data, world, device = o["out"], o["model"], o["data"], o["world"], o["device"]
    n_items, val_items, layer, seed = o["n_items"], o["val_items"], o["layer"], o["seed"]
    init_policy, threads = o["init_policy"], o["threads"]
    question_match_dim, context_width = o["question_match_dim"], o["context_width"]
    if out is None:
        raise typer.BadParameter("name the run folder (--out or the recipe's out)", param_hint="--out")
    import torch

    from cacovid.data.sources import source_from_args
    from cacovid.models import load_video_llm
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.progress import Progress
    from cacovid.train.distill import DistillConfig, distill_policy

    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        settings = DistillConfig(
            teacher=o["teacher"],
            layer=layer,
            temperature=o["temperature"],
            epochs=o["epochs"],
            batch_size=o["batch_size"],
            lr=o["lr"],
            layer_lr_scale=o["layer_lr_scale"],
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
    if settings.teacher == "evidence" and items and items[0].evidence is None:
        raise typer.BadParameter(
            f"--teacher evidence needs items with evidence annotations; {data!r} item "
            f"{items[0].id!r} has none",
            param_hint="--teacher",
        )
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
    # The step count is known from the first record on (a resumed run starts past 0).
    with Progress("distill", total=None, unit="steps") as bar:

        def show(record: dict) -> None:
            bar.update(completed=record["step"], total=record["total"], info=f"loss {record['loss']:.3f}")
            if "val" in record:
                bar.log(f"step {record['step']} loss {record['loss']:.3f} val {record['val']}")

        distill_policy(policy, llm, items, out, settings, val_items=vals, on_step=show)
    typer.echo(f"policy saved to {out / 'policy'}")
