"""`cacovid compare`: the paired difference of two methods' accuracy on the same items.

Heavy imports happen inside the command, so `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def compare_command(
    a: Annotated[Path, typer.Argument(help="results directory (or items.jsonl) of method A")],
    method_a: Annotated[str, typer.Argument(help="method of A, as in its summary (e.g. cacovid)")],
    b: Annotated[Path, typer.Argument(help="results directory (or items.jsonl) of method B")],
    method_b: Annotated[str, typer.Argument(help="method of B (e.g. relevance)")],
    ratios: Annotated[str, typer.Option(help="comma-separated retention ratios")] = "0.1",
) -> None:
    """Paired difference A − B in accuracy on the items both answered, with its standard error."""
    from cacovid.evaluate.paired import paired_difference
    from cacovid.evaluate.records import read_rows
    from cacovid.types import parse_ratios

    for path in (a, b):
        if not path.exists():
            raise typer.BadParameter(f"{path} does not exist")
    try:
        ratio_list = parse_ratios(ratios)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--ratios") from e
    rows_a, rows_b = read_rows(a), read_rows(b)
    for ratio in ratio_list:
        try:
            d = paired_difference(rows_a, method_a, rows_b, method_b, ratio)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from e
        typer.echo(
            f"ratio {ratio:g}: {method_a} {100 * d['accuracy_a']:.1f} % − {method_b} "
            f"{100 * d['accuracy_b']:.1f} % = {100 * d['difference']:+.1f} ± {100 * d['standard_error']:.1f} "
            f"points (paired s.e., n = {d['n']})"
        )
