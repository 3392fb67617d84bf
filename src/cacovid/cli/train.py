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
# `--preset`s: base TrainConfig values under the recipe and the command line.
TRAIN_PRESETS = ("answer-only", "paper")


# Fresh items of a synthetic world a run trains on unless told, each seen once: half the decoys
# recipe's 16 000, which it trains on two processes, so one process takes about as long and learns
# (`cacovid train --out DIR` with every default: 19.2 min on a 2-core x86 CPU, blind test included).
SYNTHETIC_TRAIN_ITEMS = 8000

# What the paper's recipe starts from and validates with: a fresh policy of docs/method.md §2 (no
# question-match or context term) and the selection of docs/method.md §3 (or the starting policy's).
PAPER_RUN: dict[str, Any] = {
    "question_match_dim": 0,
    "question_match_init": "zero",
    "context_width": 0,
    "val_selection": None,
}


def preset_values(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RunOptions values, TrainConfig values) of a preset: none over the defaults, or the paper's."""
    from cacovid.train.config import PAPER

    if name not in TRAIN_PRESETS:
        raise typer.BadParameter(
            f"choose one of {', '.join(TRAIN_PRESETS)}, got {name!r}", param_hint="--preset"
        )
    return (dict(PAPER_RUN), dict(PAPER)) if name == "paper" else ({}, {})


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


def _run_knob(default: Any, help: str, flags: str | None = None) -> Any:
    meta = {"help": help}
    if flags is not None:
        meta["flags"] = flags
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class RunOptions:
    """What a training run trains on and with (the training settings themselves are `TrainConfig`)."""

    preset: str = _run_knob(
        "answer-only",
        "base training settings: answer-only (TrainConfig's defaults) or paper (docs/method.md §4); "
        "every other option overrides them",
    )
    model: str = _run_knob("toy", "video LLM name or path (see cacovid.models.load_video_llm)")
    data: str = _run_knob(
        "synthetic", "'synthetic', a Video-R1 JSON file, or a benchmark NAME:ROOT (docs/benchmarks.md)"
    )
    world: str | None = _run_knob(
        None,
        "synthetic world KEY=VALUE[,KEY=VALUE…]; default preset=decoys, whose values other keys change; "
        "preset=classic[,KEY=VALUE…] for the classic world",
    )
    split: str = _run_knob("train", "synthetic split to train on")
    n_items: int | None = _run_knob(
        None, "number of training items (synthetic default: 8000, each seen once with epochs 1)"
    )
    val_data: str | None = _run_knob(None, "validation Video-R1 JSON (default: synthetic 'val' split)")
    val_items: int = _run_knob(32, "number of validation items (0: no validation)")
    out: str = _run_knob("runs/cacovid", "output directory")
    resume: bool = _run_knob(True, "continue from OUT/checkpoint", flags="--resume/--no-resume")
    stop_at: int | None = _run_knob(
        None,
        "stop once this many items are trained, with a checkpoint there (OUT/checkpoint/policy); the "
        "schedule stays sized for all items",
    )
    init_policy: str | None = _run_knob(None, "start from a saved policy instead of a fresh one")
    val_selection: str | None = _run_knob(
        "alpha=0,fill=score",
        "selection validation uses: a policy folder's selection.json (default: init_policy's), "
        "'defaults' (α 0.5 with the even fill, docs/method.md §3) or KEY=VALUE,… of alpha, cap, fill "
        "(alpha=0,fill=score: the global top-K)",
    )
    novelty_weight: float | None = _run_knob(
        None,
        "weight of the policy's temporal-novelty prior (PolicyConfig.novelty_weight; default: "
        "init_policy's, 0 for a fresh policy)",
    )
    question_match_dim: int = _run_knob(48, "a fresh policy's question-match width (PolicyConfig; 0: none)")
    question_match_init: str = _run_knob(
        "query", "a fresh question-match term's start: query (the label-free prior) or zero"
    )
    context_width: int = _run_knob(
        32,
        "a fresh policy's cross-frame context width (PolicyConfig.context_width; 0: none; it reads the "
        "question-match term, so it needs question_match_dim > 0)",
    )
    pool_size: int | None = _run_knob(
        None,
        "side k of the k x k spatial cells the policy's layer reads (PolicyConfig.pool_size: k² times "
        "cheaper in its linear parts; default: init_policy's, 1 for a fresh policy, i.e. every token)",
    )
    device: str = _run_knob("cpu", "device of the host and the policy")
    attn_implementation: str | None = _run_knob(
        None,
        "attention kernel of the host (and of the policy's copied layer): eager, sdpa, flash_attention_2 "
        "(needs flash-attn); default: transformers'",
    )
    device_map: str | None = _run_knob(
        None, "from_pretrained device map of the host: 'auto', a device, or a JSON object (policy: device)"
    )
    threads: int | None = _run_knob(None, "torch CPU threads (1 is fastest for tiny models on busy CPUs)")
    progress: bool = _run_knob(True, "show progress", flags="--progress/--no-progress")

    def __post_init__(self) -> None:
        if self.init_policy is None and self.context_width and not self.question_match_dim:
            raise ValueError(
                f"the cross-frame context term (--context-width {self.context_width}) reads the "
                "question-match term: give --question-match-dim > 0, or --context-width 0 for neither"
            )


def _kinds(hint: Any) -> tuple[Any, ...]:
    return tuple(k for k in (typing.get_args(hint) or (hint,)) if k is not type(None))


def _cli_type(hint: Any) -> Any:
    """The command line's type for a field: its own for bool/int/float/str, text for the rest
    (optional numbers take 'none', tuples take comma-separated values)."""
    kinds = _kinds(hint)
    if (
        len(kinds) == 1
        and kinds[0] in (bool, int, float, str)
        and not (kinds[0] is float and type(None) in typing.get_args(hint))
    ):
        return kinds[0]
    return str


def _from_text(name: str, text: str, hint: Any) -> Any:
    """A text option's value: 'none' for an optional field, comma-separated numbers for a tuple."""
    if type(None) in typing.get_args(hint) and text.strip().lower() == "none":
        return None
    if typing.get_origin(hint) is tuple or tuple in _kinds(hint):
        try:
            return tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise typer.BadParameter(
                f"expected comma-separated numbers, got {text!r}", param_hint=f"--{name}"
            ) from None
    for kind in _kinds(hint):
        try:
            return kind(text)
        except (TypeError, ValueError):
            continue
    raise typer.BadParameter(f"cannot read {text!r}", param_hint=f"--{name.replace('_', '-')}")


def _typed(name: str, value: Any, hint: Any) -> Any:
    """A recipe's value for field `name` of type `hint`, checked (ints pass as floats, lists as tuples)."""
    kinds = typing.get_args(hint) or (hint,)
    if value is None and type(None) in kinds:
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
    elif isinstance(value, str) and (typing.get_origin(hint) is tuple or tuple in kinds):
        return _from_text(name, value, hint)
    elif (
        isinstance(value, (list, tuple))
        and typing.get_origin(hint) is tuple
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    shown = getattr(hint, "__name__", str(hint))
    raise typer.BadParameter(f"recipe key {name!r}: expected {shown}, got {value!r}", param_hint="--config")


def _settings() -> dict[str, tuple[type, dataclasses.Field, Any]]:
    """Every option of the command, by Python name: (its dataclass, field, type hint)."""
    from cacovid.train.config import TrainConfig

    out: dict[str, tuple[type, dataclasses.Field, Any]] = {}
    for cls in (RunOptions, TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f.name] = (cls, f, hints[f.name])
    return out


def _shown_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value) or "(none)"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _signature() -> inspect.Signature:
    """The command's signature, one typer option per field of RunOptions and TrainConfig, every
    default None ("not given": a recipe's value or the field's default applies)."""
    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=typing.Optional[Path],  # noqa: UP045 - typer reads this annotation at run time
            default=typer.Option(
                None,
                help="recipe file (.json or .yaml): options spelt as Python names (n_items, adapt_ratio, …); "
                "options given here override it",
            ),
        ),
        inspect.Parameter(
            "print_config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(
                False,
                "--print-config",
                help="print the resolved training config and run options as JSON, then stop",
            ),
        ),
    ]
    for name, (_, f, hint) in _settings().items():
        kind = _cli_type(hint)
        flags = [f.metadata["flags"]] if "flags" in f.metadata else []
        default = f.default
        help_text = f"{f.metadata.get('help', '')} [default: {_shown_default(default)}]"
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=typing.Optional[kind],  # noqa: UP045 - typer reads this annotation at run time
                default=typer.Option(None, *flags, help=help_text, show_default=False),
            )
        )
    return inspect.Signature(params)


def resolve_options(given: dict[str, Any], recipe: dict[str, Any]) -> tuple[RunOptions, Any]:
    """(run options, TrainConfig) of a run: the command line's values (`given`, None: not given), else
    the recipe's, else the fields' defaults. Unknown recipe keys and invalid values are usage errors."""
    from cacovid.train.config import TrainConfig

    settings = _settings()
    unknown = sorted(set(recipe) - set(settings) - set(RECIPE_NOTES))
    if unknown:
        raise typer.BadParameter(
            f"unknown recipe keys {unknown}: a recipe holds `cacovid train` options spelt as Python "
            "names (n_items for --n-items), TrainConfig fields and a description",
            param_hint="--config",
        )
    values: dict[type, dict[str, Any]] = {RunOptions: {}, TrainConfig: {}}
    for name, (cls, _, hint) in settings.items():
        if given.get(name) is not None:
            value = given[name]
            if isinstance(value, str) and _cli_type(hint) is str and str not in _kinds(hint):
                value = _from_text(name, value, hint)
            values[cls][name] = value
        elif name in recipe:
            values[cls][name] = _typed(name, recipe[name], hint)
    run_base, train_base = preset_values(values[RunOptions].get("preset", RunOptions.preset))
    try:
        return (
            RunOptions(**{**run_base, **values[RunOptions]}),
            TrainConfig(**{**train_base, **values[TrainConfig]}),
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


def _validation_selection(val_selection: str | None, init_policy: str | None) -> dict:
    """Selection options for validation: a policy folder's selection.json, or docs/method.md §3's
    defaults."""
    from cacovid.evaluate.methods import selection_options

    if val_selection == "defaults":
        return {}
    if val_selection is not None and "=" in val_selection:
        return selection_from_text(val_selection)
    source = val_selection or init_policy
    if source is None:
        return {}
    if not Path(source).is_dir():
        raise typer.BadParameter(f"--val-selection: policy folder {source} does not exist")
    return selection_options(source)


def selection_from_text(text: str) -> dict[str, Any]:
    """alpha=0,fill=score → {"alpha": 0.0, "fill": "score"} (cap and alpha are numbers)."""
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in ("alpha", "cap", "fill") or not value.strip():
            raise typer.BadParameter(
                f"expected alpha=…, cap=… or fill=…, got {part!r}", param_hint="--val-selection"
            )
        try:
            out[key] = value.strip() if key == "fill" else float(value)
        except ValueError:
            raise typer.BadParameter(
                f"{key} must be a number, got {value!r}", param_hint="--val-selection"
            ) from None
    return out


def train(ctx: typer.Context, config: Path | None = None, print_config: bool = False, **given: Any) -> None:
    """Train a CaCoVID policy (docs/method.md §4); writes OUT/log.jsonl, OUT/checkpoint/, OUT/policy/.

    Every option but --config and --print-config is a field of `RunOptions` or `TrainConfig`."""
    recipe = read_recipe(config) if config is not None else {}
    options, train_config = resolve_options(given, recipe)
    if options.stop_at is not None and options.stop_at < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--stop-at")
    check_model_options(options)
    run(options, train_config, print_config=print_config)


train.__signature__ = _signature()
app.callback(invoke_without_command=True)(train)


def check_model_options(options: RunOptions) -> None:
    """Check --attn-implementation and --device-map (from the command line or a recipe) before any
    weights load: a usage error naming the option."""
    from cacovid.models.options import check_attn_implementation, parse_device_map

    try:
        check_attn_implementation(options.attn_implementation)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--attn-implementation") from None
    try:
        parse_device_map(options.device_map)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--device-map") from None


def run(options: RunOptions, config, *, print_config: bool = False) -> None:
    """Train with run options and a TrainConfig (on every process of a multi-process launch;
    docs/scale-out.md)."""
    if print_config:
        shown = {"train_config": config.to_dict(), "run": dataclasses.asdict(options)}
        typer.echo(json.dumps(shown, indent=2, sort_keys=True))
        return

    from cacovid.distributed import joined, process_device

    with joined(options.device) as processes:
        _train(options, config, processes, process_device(options.device, processes))


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


def _train(options: RunOptions, config, processes, device: str) -> None:
    """The training run on one of its processes (all of them when launched with several)."""
    from rich.console import Console
    from rich.table import Table

    from cacovid.data.sources import source_from_args
    from cacovid.models import load_video_llm
    from cacovid.models.options import parse_device_map
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.trainer import Trainer

    console = Console(stderr=True, quiet=not processes.is_main)  # process 0 speaks for the run
    out = Path(options.out)
    if processes.distributed:
        console.print(f"{processes.world_size} processes; items split round-robin (docs/scale-out.md)")
    if options.threads is not None:
        import torch

        torch.set_num_threads(max(1, options.threads))
    data, world, val_items = options.data, options.world, options.val_items
    try:
        # Training and tuning do not key anything by item id, so a file's ids may repeat.
        source = source_from_args(
            data,
            split=options.split,
            world=world,
            n=options.n_items,
            synthetic_n=SYNTHETIC_TRAIN_ITEMS,
            unique_ids=False,
        )
        train_items, world_cfg = source.sequence, source.world
        if val_items <= 0:
            vals: Sequence = []
        elif options.val_data:
            vals = source_from_args(options.val_data, split="val", n=val_items, unique_ids=False).sequence
        elif data == "synthetic":
            vals = source_from_args("synthetic", split="val", world=world, n=val_items).sequence
        else:
            vals = []
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if options.resume:
        _check_same_world(out, world_cfg)
    console.print(f"loading [bold]{options.model}[/bold] …")
    try:
        llm = load_video_llm(
            options.model,
            device=device,
            attn_implementation=options.attn_implementation,
            device_map=parse_device_map(options.device_map),
        )
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--model") from e
    init_policy, novelty_weight = options.init_policy, options.novelty_weight
    try:
        if init_policy is not None:
            policy = CaCoVIDPolicy.from_pretrained(init_policy, host=llm)
            if novelty_weight is not None:
                policy.config = dataclasses.replace(policy.config, novelty_weight=novelty_weight)
            if options.pool_size is not None:
                policy.config = dataclasses.replace(policy.config, pool_size=options.pool_size)
        else:
            policy = CaCoVIDPolicy.from_host(
                llm,
                seed=config.seed,
                novelty_weight=novelty_weight or 0.0,
                question_match_dim=options.question_match_dim,
                question_match_init=options.question_match_init,
                context_width=options.context_width,
                pool_size=1 if options.pool_size is None else options.pool_size,
            )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    policy.to(device)
    out.mkdir(parents=True, exist_ok=True)
    if world_cfg is not None and processes.is_main:
        (out / "world.json").write_text(json.dumps(world_cfg, indent=2))
    selection = _validation_selection(options.val_selection, init_policy)
    trainer = Trainer(
        llm,
        policy,
        config,
        train_items,
        vals,
        out,
        resume=options.resume,
        progress=options.progress,
        val_selection=selection,
        processes=processes,
    )
    try:
        summary = trainer.fit(stop_at=options.stop_at)
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
