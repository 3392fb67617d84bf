"""`cacovid world …`: look at the synthetic world and export it as ordinary video-QA files.

`sample` writes a few items as mp4 + Video-R1 JSON + one contact-sheet PNG per item, so a person can
see what the benchmark looks like; `stats` prints how sparse the evidence is and how balanced the
answers are. Both take `--world KEY=VALUE,...` (see `WorldConfig`) and `--split`; without a
preset the keys change the default world, `preset=decoys` (`world_from_overrides`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

_WORLD_HELP = (
    "World KEY=VALUE[,KEY=VALUE…], ranges as LOW:HIGH; default preset=decoys, whose values other keys "
    "change (frames=32); preset=classic[,KEY=VALUE…] for the classic world"
)
_SPLIT_HELP = "train, val or test"


def _world(world: str, split: str):
    """Build the world from the override string; user errors become clean CLI errors."""
    from cacovid.data.synthetic import SPLITS, SyntheticWorld
    from cacovid.data.synthetic.config import world_from_overrides

    if split not in SPLITS:
        raise typer.BadParameter(
            f"unknown split {split!r}; expected one of {', '.join(SPLITS)}", param_hint="--split"
        )
    try:
        config = world_from_overrides(world)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--world") from exc
    return SyntheticWorld(config)


@app.command()
def sample(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of items.")] = 8,
    split: Annotated[str, typer.Option("--split", help=_SPLIT_HELP)] = "test",
    world: Annotated[str, typer.Option("--world", help=_WORLD_HELP)] = "",
    start: Annotated[int, typer.Option("--start", min=0, help="Index of the first item.")] = 0,
) -> None:
    """Write n items as mp4 videos, a Video-R1 JSON and contact sheets (PNG) under OUT."""
    from rich.console import Console

    from cacovid.data.synthetic import contact_sheet, export_videor1

    synthetic = _world(world, split)
    console = Console()
    json_path = export_videor1(synthetic, split, n, out, start=start)
    sheets = []
    for item in synthetic.items(split, n, start=start):
        index = int(item.meta["index"])
        sheets.append(contact_sheet(item, out / "sheets" / f"{split}_{index:06d}.png"))
    (out / "world.json").write_text(json.dumps(synthetic.config.to_dict(), indent=1) + "\n", encoding="utf-8")
    console.print(f"[green]wrote[/green] {n} items: {json_path}")
    console.print(
        f"videos in {out / 'videos'}, contact sheets in {out / 'sheets'}, config in {out / 'world.json'}"
    )


@app.command()
def stats(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of items to generate.")] = 500,
    split: Annotated[str, typer.Option("--split", help=_SPLIT_HELP)] = "test",
    world: Annotated[str, typer.Option("--world", help=_WORLD_HELP)] = "",
) -> None:
    """Print evidence fraction and answer balance (letters, values) per question family."""
    from rich.console import Console
    from rich.table import Table

    from cacovid.data.synthetic import world_stats

    synthetic = _world(world, split)
    per_family = world_stats(synthetic, split, n)
    cfg = synthetic.config
    table = Table(title=f"synthetic:{split}, {n} items, {cfg.num_tokens} video tokens per item")
    columns = (
        "family", "n", "evidence %", "evidence tokens", "decoy %", "decoy tokens",
        "A", "B", "C", "D", "answers (min-max)",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "family" else "right")
    for family, s in per_family.items():
        letters = [f"{100 * s.letters[letter] / s.n:.0f}%" for letter in "ABCD"]
        counts = s.answers.values()
        table.add_row(
            family,
            str(s.n),
            f"{100 * s.evidence_fraction:.2f}",
            f"{s.evidence_fraction * cfg.num_tokens:.1f}",
            f"{100 * s.decoy_fraction:.2f}",
            f"{s.decoy_fraction * cfg.num_tokens:.1f}",
            *letters,
            f"{len(s.answers)} values ({min(counts)}-{max(counts)})",
        )
    Console().print(table)
    if cfg.num_decoys:
        budgets = ", ".join(f"{int(r * 100)} %: {int(r * cfg.num_tokens)}" for r in (0.25, 0.1, 0.05))
        Console().print(
            f"decoy tokens: non-evidence cells where an object that comes and goes shows; "
            f"token budgets ({budgets})"
        )
