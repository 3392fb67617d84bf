"""`cacovid tune-selection`: choose a policy's α / cap / fill on validation items, save selection.json."""

from __future__ import annotations

from pathlib import Path

import typer


def tune_selection_command(
    policy: Path = typer.Option(..., help="Saved CaCoVID policy folder; selection.json is written here."),
    model: str = typer.Option("toy", help="Video LLM the policy was trained for."),
    data: str = typer.Option(
        "synthetic", help='"synthetic", a Video-R1 JSON file or a benchmark NAME:ROOT of validation items.'
    ),
    world: str = typer.Option(
        None,
        help="Synthetic world KEY=VALUE[,KEY=VALUE…]; default preset=decoys, whose values other keys "
        "change; preset=classic[,KEY=VALUE…] for the classic world (tune on the policy's own world).",
    ),
    split: str = typer.Option("val", help="Synthetic split (never tune on the test split)."),
    n: int = typer.Option(90, min=1, help="Validation items."),
    ratios: str = typer.Option("0.1", help="Comma list of retention ratios to tune for (mean accuracy)."),
    tolerance: float = typer.Option(
        None,
        min=0.0,
        help="Accuracies within this of the best count as tied, and the tie goes to evidence recall "
        "(default: one standard error of the best accuracy; 0: the strictly most accurate).",
    ),
    by: str = typer.Option(
        "recall",
        help="recall: the best evidence recall among the settings about as accurate as the most accurate; "
        "accuracy: the most accurate, from the answers alone (no evidence annotations read).",
    ),
    write: bool = typer.Option(True, "--write/--dry-run", help="Write selection.json (else only print)."),
    device: str = typer.Option("cpu"),
) -> None:
    """Try α ∈ {0, 0.5, 0.75, 1}, cap ∈ {1.5·ρ, 1}, fill ∈ {even, score}; keep the best recall among
    the settings about as accurate as the most accurate (or, with --by accuracy, the most accurate)."""
    import torch

    from cacovid.data.sources import source_from_args
    from cacovid.models import load_video_llm
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.tuning import tune_selection, write_selection
    from cacovid.types import parse_ratios

    if data == "synthetic" and split == "test":
        raise typer.BadParameter(
            "tuning on the test split would leak into the reported results", param_hint="--split"
        )
    try:
        ratio_list = parse_ratios(ratios)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--ratios") from e
    if not policy.is_dir():
        raise typer.BadParameter(f"{policy} is not a policy folder", param_hint="--policy")
    adapter = load_video_llm(model, device=device)
    pol = CaCoVIDPolicy.from_pretrained(policy, host=adapter).to(adapter.device)
    try:
        items = list(source_from_args(data, split=split, world=world, n=n, unique_ids=False).items())
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    with torch.inference_mode():
        prompts = [adapter.encode_item(it) for it in items]
    from cacovid.train.tuning import TUNING_CRITERIA

    if by not in TUNING_CRITERIA:
        raise typer.BadParameter(f"choose one of {', '.join(TUNING_CRITERIA)}", param_hint="--by")
    best, table = tune_selection(adapter, pol, prompts, items, ratio_list, tolerance=tolerance, by=by)
    for row in table:
        cap = "1.5ρ" if row["cap"] is None else row["cap"]
        rec = "–" if row["evidence_recall"] is None else f"{row['evidence_recall']:.3f}"
        typer.echo(
            f"alpha {row['alpha']:<5} cap {cap!s:<5} fill {row['fill']:<6} "
            f"acc {row['accuracy']:.3f} recall {rec}"
        )
    typer.echo(f"best: {best}")
    if write:
        chosen = next(
            r
            for r in table
            if r["alpha"] == best["alpha"] and r["fill"] == best["fill"] and r["cap"] == best.get("cap")
        )
        note = (
            f"chosen by `cacovid tune-selection --by {by}` on {len(items)} {split} items "
            f"at ratios {ratio_list}: "
            f"accuracy {chosen['accuracy']:.3f}, evidence recall {chosen['evidence_recall']}"
        )
        typer.echo(f"wrote {write_selection(policy, best, note)}")
