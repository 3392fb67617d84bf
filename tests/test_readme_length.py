"""README.md stays a user's guide: the set-up commands, the quick starts, one headline table per world
and where to go next. Results in full belong in docs/experiments.md; a README of 200 lines or more has
grown past a guide."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
MAX_LINES = 199
SECTIONS = (
    "## Set-up: two commands",
    "## Quick start: the command line",
    "## Quick start: Python",
    "## CaCoVID on the embedded world",
    "## Where to go next",
)


def test_readme_stays_under_200_lines():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; move result prose to docs/experiments.md"


def test_readme_keeps_the_guide_sections_and_both_set_up_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert [s for s in SECTIONS if s not in lines] == []
    assert any(line.startswith("./dev demo") for line in lines)
    assert any(line.startswith("./dev test") for line in lines)
    assert "`cacovid demo --world preset=classic`" in text  # the classic world's table, beside decoys'
