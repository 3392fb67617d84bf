"""The `cacovid` command: one typer app; each command family lives in its own module here.

Sub-apps are mounted at import time; a command module's heavy imports (torch, transformers) happen
inside its commands, so `cacovid --help` stays fast.
"""

from __future__ import annotations

import typer

from cacovid.cli import compare, demo, distill, import_official, toy, train, tune, world
from cacovid.cli import eval as eval_cli
from cacovid.cli import filter as filter_cli

app = typer.Typer(
    name="cacovid",
    help="Contribution-aware token compression for video LLMs (CaCoVID): train, evaluate, compare.",
    no_args_is_help=True,
    add_completion=False,
)

app.command("demo")(demo.demo_command)
app.add_typer(world.app, name="world", help="Look at and export the embedded synthetic video-QA world.")
app.add_typer(toy.app, name="toy", help="Train and evaluate the embedded tiny video LLM.")
app.add_typer(train.app, name="train", help="Train a CaCoVID policy for a video LLM (RL, resumable).")
app.command("eval")(eval_cli.eval_command)
app.command("report")(eval_cli.report_command)
app.command("compare")(compare.compare_command)
app.command("tune-selection")(tune.tune_selection_command)
app.command("distill")(distill.distill_command)
app.command("filter")(filter_cli.filter_command)
app.command("import-official")(import_official.import_official_command)


def main() -> None:
    app()
