"""The README's Python quick start runs as printed and answers with both selectors."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_quick_start_runs():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start: Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["cacovid", "divprune"]
    assert all(line.split()[1] == "78" for line in lines)  # 10 % of 784 tokens
