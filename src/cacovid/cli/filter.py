"""`cacovid filter`: the blind test over a Video-R1 training file, once, resumably.

Runs the host model on every question with no video tokens and drops those it answers correctly
(docs/method.md §5), writing the surviving rows as a Video-R1 JSON for `cacovid train --data FILE
--no-blind-filter`, a summary, and a progress file that a rerun of the same command continues from
(`cacovid.train.blind_filter`). Heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def default_output(data: Path) -> Path:
    """`train.json` → `train.blind-filtered.json` beside it (relative video paths stay valid)."""
    return data.with_name(f"{data.stem}.blind-filtered.json")


def filter_command(
    data: Annotated[Path, typer.Option("--data", help="Video-R1 style training JSON to filter.")],
    model: Annotated[
        str, typer.Option("--model", help='Video LLM: "toy" or a checkpoint directory / hub id.')
    ] = "toy",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Filtered Video-R1 JSON (default: DATA's name + .blind-filtered.json, beside it); "
            "OUT.progress.jsonl and OUT.summary.json go beside it.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Questions per answer call.")] = 16,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="Blind answer length (the trainer's: 4).")
    ] = 4,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Decide rows that failed in an earlier run again.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help='"auto", "cpu", "cuda", "cuda:1", …')] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = "float32",
) -> None:
    """Drop the training questions the host answers correctly without the video (blind test)."""
    from rich.console import Console
    from rich.table import Table

    from cacovid.cli.eval import _device, _dtype
    from cacovid.models import load_video_llm
    from cacovid.progress import Progress
    from cacovid.train.blind_filter import BlindFilterJob, RowEvent

    console = Console()
    output = out if out is not None else default_output(data)
    torch_dtype = _dtype(dtype)
    try:
        adapter = load_video_llm(model, device=_device(device), dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot load model {model!r}:[/red] {exc}")
        raise typer.Exit(1) from exc

    try:
        job = BlindFilterJob(
            adapter,
            data,
            output,
            model=model,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            retry_failed=retry_failed,
        )
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)  # unwrapped: the message names files
        raise typer.Exit(1) from exc

    counts = {"keep": 0, "drop": 0, "failed": 0}
    with Progress("blind filter", total=len(job.rows), unit="rows") as progress:

        def on_row(event: RowEvent) -> None:
            if event.decision in counts:
                counts[event.decision] += 1
            if event.error is not None:
                progress.log(f"row {event.index} failed: {event.error}")
            status = f"kept {counts['keep']}, dropped {counts['drop']}, failed {counts['failed']}"
            if event.skipped:  # decided by an earlier run: counted, but not part of this run's pace
                progress.skip()
            else:
                progress.advance(info=status)

        job.on_row = on_row
        summary = job.run()

    table = Table(title=f"blind filter — {summary['n_rows']} rows of {data}")
    for col in ("problem_type / data_source", "kept", "dropped", "failed"):
        table.add_column(col, justify="left" if col.startswith("problem") else "right")
    for group in ("per_problem_type", "per_data_source"):
        for name, c in summary[group].items():
            table.add_row(name, str(c["kept"]), str(c["dropped"]), str(c["failed"]))
    table.add_row("[bold]all[/bold]", str(summary["kept"]), str(summary["dropped"]), str(summary["failed"]))
    console.print(table)
    console.print(f"filtered rows: {job.paths.output}; summary: {job.paths.summary}", soft_wrap=True)
