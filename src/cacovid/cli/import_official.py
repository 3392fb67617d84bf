"""`cacovid import-official`: the released LLaVA-OneVision checkpoint's policy as a saved CaCoVID policy."""

from __future__ import annotations

import json
from pathlib import Path

import typer

LAYER_ATTENTIONS = ("causal", "bidirectional")
SELECTION_RULES = ("release", "cacovid")


def import_official_command(
    checkpoint_dir: Path = typer.Argument(
        ..., help="The release's checkpoint folder (config.json and *.safetensors with compression_policy.*)."
    ),
    out: Path = typer.Option(..., help="Folder to write the policy to (config.json, model.safetensors)."),
    host: str = typer.Option(
        None, help="Video LLM the policy will run on (folder or hub id); its config is checked against it."
    ),
    layer_attention: str = typer.Option(
        "causal", help="causal: as the release ran; bidirectional: docs/method.md §2 (docs/method.md §8)."
    ),
    selection_rule: str = typer.Option(
        "release", help="release: the release's budgets and evenly spaced fill; cacovid: docs/method.md §3."
    ),
    force: bool = typer.Option(False, help="Overwrite a policy already saved in --out."),
) -> None:
    """Turn the release's compression_policy.* parameters into a saved CaCoVIDPolicy (+ selection.json
    with the release's α = 0.5 and per-frame cap 1.5·ρ)."""
    from cacovid.policy.official import import_official
    from cacovid.policy.settings import write_selection

    if layer_attention not in LAYER_ATTENTIONS:
        raise typer.BadParameter(
            f"must be one of {', '.join(LAYER_ATTENTIONS)}", param_hint="--layer-attention"
        )
    if selection_rule not in SELECTION_RULES:
        raise typer.BadParameter(
            f"must be one of {', '.join(SELECTION_RULES)}", param_hint="--selection-rule"
        )
    if (out / "model.safetensors").exists() and not force:
        raise typer.BadParameter(
            f"{out} already holds a policy (pass --force to overwrite)", param_hint="--out"
        )
    try:
        policy, report = import_official(
            checkpoint_dir, host=host, layer_attention=layer_attention, selection_rule=selection_rule
        )
    except (ValueError, OSError) as e:
        raise typer.BadParameter(str(e), param_hint="CHECKPOINT_DIR") from e
    policy.save_pretrained(out)
    # The release's inference settings: imp_ratio 0.5 and max_sample_ratio_for_each_frame 1.5·ratio,
    # which are docs/method.md §3's defaults α = 0.5 and c = 1.5·ρ.
    write_selection(
        out, {"alpha": 0.5, "fill": "even"}, note="the release's settings (imp_ratio 0.5, cap 1.5·ρ)"
    )
    (out / "import.json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(
        f"imported {report['imported']} tensors ({report['parameters']:,} parameters) from {checkpoint_dir} "
        f"into {out}; not imported: {', '.join(report['not_imported']) or 'nothing'}"
    )
