"""`cacovid train`: train a CaCoVID policy against a frozen video LLM.

The command is the callback of this sub-app, so `app.add_typer(train.app, name="train")` gives
`cacovid train --model toy --data synthetic --out runs/x` directly. Heavy imports happen inside.

A run can be described by a recipe file (`--config PATH.json`, or `.yaml`): one JSON or YAML object
whose keys are the command's options, spelt as Python names (`n_items` for `--n-items`,
`adapt_ratio: false` for `--fixed-ratio`), and any other `TrainConfig` field (`warmup_fraction`,
`dual_clip`, …), plus an optional `description`. Options given on the command line override the
file. Relative paths in a recipe are taken from the current directory. The recipes of the shipped
policies are in `recipes/`.

Under `accelerate launch --num_processes N` (or `torchrun`) the same command trains on N processes:
items are split round-robin, gradients averaged, and process 0 writes OUT (docs/scale-out.md).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(add_completion=False)

# Keys of a recipe file that are neither command options nor TrainConfig fields.
RECIPE_NOTES = ("description",)
# Command options that a recipe cannot set.
_NOT_IN_RECIPES = ("config", "print_config")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The object of a recipe file (.json, or .yaml / .yml through PyYAML), its keys unchecked."""
    path = Path(path)
    if not path.is_file():
        raise typer.BadParameter(f"no recipe file {path}", param_hint="--config")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:  # pragma: no cover - PyYAML comes with the pinned environment
            raise typer.BadParameter("a YAML recipe needs PyYAML; use JSON", param_hint="--config") from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise typer.BadParameter(f"{path}: {e}", param_hint="--config") from e
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise typer.BadParameter(f"{path}: {e}", param_hint="--config") from e
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: a recipe is one object of options", param_hint="--config")
    return data


def _typed(name: str, value: Any, hint: Any, nullable: bool) -> Any:
    """A recipe's value for option or field `name` of type `hint`, checked (ints pass as floats)."""
    kinds = typing.get_args(hint) or (hint,)
    if value is None and (nullable or type(None) in kinds):
        return None
    if isinstance(value, bool):
        if bool in kinds:
            return value
    elif isinstance(value, int) and int in kinds:
        return value
    elif isinstance(value, (int, float)) and float in kinds:
        return float(value)
    elif isinstance(value, str) and str in kinds:
        return value
    shown = getattr(hint, "__name__", str(hint))
    raise typer.BadParameter(f"recipe key {name!r}: expected {shown}, got {value!r}", param_hint="--config")


def resolve_options(
    ctx: typer.Context, options: dict[str, Any], recipe: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(command options, other TrainConfig fields) of a run: `options` as parsed, with `recipe`'s
    values for every option not given on the command line.

    Unknown recipe keys are an error that names them.
    """
    from cacovid.train.config import TrainConfig

    fields = typing.get_type_hints(TrainConfig)
    hints = typing.get_type_hints(train)
    settable = set(options) - set(_NOT_IN_RECIPES)
    unknown = sorted(set(recipe) - settable - set(fields) - set(RECIPE_NOTES))
    if unknown:
        raise typer.BadParameter(
            f"unknown recipe keys {unknown}: a recipe holds `cacovid train` options spelt as Python "
            "names (n_items for --n-items), TrainConfig fields and a description",
            param_hint="--config",
        )
    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()}
    resolved, extra = dict(options), {}
    for key, value in recipe.items():
        if key in RECIPE_NOTES:
            continue
        if key not in settable:
            extra[key] = _typed(key, value, fields[key], nullable=False)
            continue
        source = ctx.get_parameter_source(key)
        if source is not None and source.name == "COMMANDLINE":
            continue  # the command line wins
        if key == "val_ratios" and isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        resolved[key] = _typed(key, value, hints[key], nullable=getattr(defaults[key], "default", 0) is None)
    return resolved, extra


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
    ctx: typer.Context,
    config: Path = typer.Option(
        None,
        help="recipe file (.json or .yaml): command options (as n_items, adapt_ratio, …) and "
        "TrainConfig fields; options given here override it",
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="print the resolved training config and run options as JSON, then stop"
    ),
    model: str = typer.Option("toy", help="video LLM name or path (see cacovid.models.load_video_llm)"),
    data: str = typer.Option(
        "synthetic", help="'synthetic', a Video-R1 JSON file, or a benchmark NAME:ROOT (docs/benchmarks.md)"
    ),
    world: str = typer.Option(
        None,
        help="synthetic world KEY=VALUE[,KEY=VALUE…]; default preset=decoys, whose values other keys "
        "change; preset=classic[,KEY=VALUE…] for the classic world",
    ),
    split: str = typer.Option("train", help="synthetic split to train on"),
    n_items: int = typer.Option(None, help="number of training items (synthetic default 200)"),
    val_data: str = typer.Option(None, help="validation Video-R1 JSON (default: synthetic 'val' split)"),
    val_items: int = typer.Option(32, help="number of validation items (0: no validation)"),
    out: str = typer.Option("runs/cacovid", help="output directory"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from OUT/checkpoint"),
    stop_at: int = typer.Option(
        None,
        help="stop once this many items are trained, with a checkpoint there (OUT/checkpoint/policy); "
        "the schedule stays sized for all items",
    ),
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
    sampler: str = typer.Option(
        "modes",
        help='"modes" (token, frame and content modes, docs/method.md §4) or "naive" (an ablation: '
        "every rollout draws its tokens from softmax(s) over the whole video; needs --frame-share 0 "
        "and content_rollout false in the recipe)",
    ),
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
    attn_implementation: str = typer.Option(
        None,
        "--attn-implementation",
        help="attention kernel of the host (and of the policy's copied layer): eager, sdpa, "
        "flash_attention_2 (needs flash-attn); default: transformers'",
    ),
    device_map: str = typer.Option(
        None,
        "--device-map",
        help="from_pretrained device map of the host: 'auto', a device, or a JSON object; the policy "
        "stays on --device",
    ),
    threads: int = typer.Option(None, help="torch CPU threads (1 is fastest for tiny models on busy CPUs)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a CaCoVID policy (docs/method.md §4); writes OUT/log.jsonl, OUT/checkpoint/, OUT/policy/."""
    options = {k: v for k, v in locals().items() if k != "ctx"}
    recipe = read_recipe(config) if config is not None else {}
    o, extra = resolve_options(ctx, options, recipe)
    if o["stop_at"] is not None and o["stop_at"] < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--stop-at")
    check_model_options(o)
    run(o, extra)


def check_model_options(o: dict[str, Any]) -> None:
    """Check --attn-implementation and --device-map (from the command line or a recipe) before any
    weights load: a usage error naming the option."""
    from cacovid.models.options import check_attn_implementation, parse_device_map

    try:
        check_attn_implementation(o["attn_implementation"])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--attn-implementation") from None
    try:
        parse_device_map(o["device_map"])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--device-map") from None


def build_train_config(o: dict[str, Any], extra: dict[str, Any]):
    """The TrainConfig of resolved command options `o` and further TrainConfig fields `extra`."""
    from cacovid.train.config import TrainConfig
    from cacovid.types import parse_ratios

    try:  # an empty list turns validation off, as --val-items 0 does
        val_ratio_list = tuple(parse_ratios(o["val_ratios"])) if o["val_ratios"].strip() else ()
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--val-ratios") from e
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"ratio_min", "ratio_max", "val_ratios"}
    fields = {k: v for k, v in o.items() if k in names}
    try:
        return TrainConfig(
            **fields,
            ratio_min=min(o["ratio_min"], o["ratio"]),
            ratio_max=max(o["ratio_max"], o["ratio"]),
            val_ratios=val_ratio_list,
            **extra,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


# The run options `--print-config` shows beside the training config.
_RUN_KEYS = (
    "model", "data", "world", "split", "n_items", "val_data", "val_items", "out", "resume", "stop_at",
    "init_policy", "val_selection", "novelty_weight", "device", "attn_implementation", "device_map",
    "threads",
)  # fmt: skip


def run(o: dict[str, Any], extra: dict[str, Any]) -> None:
    """Train with resolved command options `o` and further TrainConfig fields `extra` (on every
    process of a multi-process launch; docs/scale-out.md)."""
    config = build_train_config(o, extra)
    if o["print_config"]:
        shown = {"train_config": config.to_dict(), "run": {k: o[k] for k in _RUN_KEYS}}
        typer.echo(json.dumps(shown, indent=2, sort_keys=True))
        return

    from cacovid.distributed import joined, process_device

    with joined(o["device"]) as processes:
        _train(o, config, processes, process_device(o["device"], processes))


def _check_same_world(out: Path, world: dict[str, Any] | None) -> None:
    """Refuse to continue a run in OUT on another synthetic world than the one it started on.

    The world's items are what the run trains on, so resuming on another world would mix two runs.
    The likely way to get here is the default world's change to `preset=decoys`: a run started
    without `--world` before it trained on the classic world, and resuming it needs
    `--world preset=classic`.
    """
    from cacovid.data.synthetic import WorldConfig
    from cacovid.train.checkpoint import find_checkpoint

    saved = out / "world.json"
    if world is None or not saved.is_file() or find_checkpoint(out) is None:
        return

    try:
        before = WorldConfig.from_dict(json.loads(saved.read_text()))
    except (ValueError, TypeError) as e:
        raise typer.BadParameter(f"{saved} does not hold a world config: {e}", param_hint="--out") from e
    now = WorldConfig.from_dict(world)
    if before != now:
        name = before.preset_name
        raise typer.BadParameter(
            f"{out} holds a run on another world ({saved}: "
            f"{f'preset={name}' if name else before.to_dict()}); pass that world with --world "
            f"(the default is preset=decoys; a run started without --world before that default "
            f"needs --world preset=classic), --no-resume to start over, or another --out",
            param_hint="--world",
        )


def _train(o: dict[str, Any], config, processes, device: str) -> None:
    """The run of `run` on one of its processes (all of them when launched with several)."""
    from rich.console import Console
    from rich.table import Table

    from cacovid.data.sources import source_from_args
    from cacovid.models import load_video_llm
    from cacovid.models.options import parse_device_map
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.trainer import Trainer

    console = Console(stderr=True, quiet=not processes.is_main)  # process 0 speaks for the run
    out = Path(o["out"])
    if processes.distributed:
        console.print(f"{processes.world_size} processes; items split round-robin (docs/scale-out.md)")
    if o["threads"] is not None:
        import torch

        torch.set_num_threads(max(1, o["threads"]))
    data, world, val_items = o["data"], o["world"], o["val_items"]
    try:
        # Training and tuning do not key anything by item id, so a file's ids may repeat.
        source = source_from_args(
            data, split=o["split"], world=world, n=o["n_items"], synthetic_n=200, unique_ids=False
        )
        train_items, world_cfg = source.sequence, source.world
        if val_items <= 0:
            vals: Sequence = []
        elif o["val_data"]:
            vals = source_from_args(o["val_data"], split="val", n=val_items, unique_ids=False).sequence
        elif data == "synthetic":
            vals = source_from_args("synthetic", split="val", world=world, n=val_items).sequence
        else:
            vals = []
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if o["resume"]:
        _check_same_world(out, world_cfg)
    console.print(f"loading [bold]{o['model']}[/bold] …")
    try:
        llm = load_video_llm(
            o["model"],
            device=device,
            attn_implementation=o["attn_implementation"],
            device_map=parse_device_map(o["device_map"]),
        )
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--model") from e
    init_policy, novelty_weight = o["init_policy"], o["novelty_weight"]
    try:
        if init_policy is not None:
            policy = CaCoVIDPolicy.from_pretrained(init_policy, host=llm)
            if novelty_weight is not None:
                policy.config = dataclasses.replace(policy.config, novelty_weight=novelty_weight)
        else:
            policy = CaCoVIDPolicy.from_host(llm, seed=config.seed, novelty_weight=novelty_weight or 0.0)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    policy.to(device)
    out.mkdir(parents=True, exist_ok=True)
    if world_cfg is not None and processes.is_main:
        (out / "world.json").write_text(json.dumps(world_cfg, indent=2))
    selection = _validation_selection(o["val_selection"], init_policy)
    trainer = Trainer(
        llm,
        policy,
        config,
        train_items,
        vals,
        out,
        resume=o["resume"],
        progress=o["progress"],
        val_selection=selection,
        processes=processes,
    )
    try:
        summary = trainer.fit(stop_at=o["stop_at"])
    except ValueError as e:  # e.g. a checkpoint this run cannot continue: say why, no traceback
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    table = Table(title=f"CaCoVID training — {out}")
    table.add_column("ratio")
    table.add_column("val accuracy")
    table.add_column("evidence recall")
    for row in summary["validation"]:
        rec = row.get("evidence_recall")
        table.add_row(f"{row['ratio']:.3f}", f"{row['accuracy']:.3f}", "-" if rec is None else f"{rec:.3f}")
    console.print(table)
    saved = out / "policy" if summary["finished"] else out / "checkpoint" / "policy"
    console.print(
        f"{summary['items_done']} items, {summary['steps']} optimiser steps, final r {summary['ratio']:.3f}; "
        f"policy saved to {saved}"
    )
