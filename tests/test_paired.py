"""Paired differences between two methods (`cacovid.evaluate.paired`, `cacovid compare`)."""

from __future__ import annotations

import doctest
import json
import math

import pytest
from typer.testing import CliRunner

from cacovid.cli import app
from cacovid.evaluate import paired
from cacovid.evaluate.paired import paired_difference


def _rows(method: str, correct: list[bool], ratio: float = 0.1, start: int = 0) -> list[dict]:
    return [
        {"item_id": f"i{start + k}", "method": method, "ratio": ratio, "correct": c}
        for k, c in enumerate(correct)
    ]


def test_paired_difference_and_its_standard_error():
    a = _rows("cacovid", [True, True, True, False, True])
    b = _rows("relevance", [True, False, True, False, False])
    d = paired_difference(a, "cacovid", b, "relevance", 0.1)
    diffs = [0, 1, 0, 0, 1]
    mean = sum(diffs) / 5
    se = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 4 / 5)
    assert d["n"] == 5 and d["difference"] == pytest.approx(mean) and d["standard_error"] == pytest.approx(se)
    assert (d["accuracy_a"], d["accuracy_b"]) == (pytest.approx(0.8), pytest.approx(0.4))
    # only shared items count; the later row of a key wins; other ratios are ignored
    more = [
        *a,
        *_rows("cacovid", [False], start=9),
        {**a[0], "correct": False},
        *_rows("cacovid", [True], 0.05),
    ]
    d = paired_difference(more, "cacovid", b, "relevance", 0.1)
    assert d["n"] == 5 and d["only_a"] == 1 and d["difference"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no item has both"):
        paired_difference(a, "cacovid", b, "relevance", 0.25)


def test_module_example_runs():
    assert doctest.testmod(paired).failed == 0


def test_compare_command(tmp_path):
    for name, rows in (
        ("a", _rows("cacovid", [True, True, False])),
        ("b", _rows("relevance", [False, True, False])),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(
        app, ["compare", str(tmp_path / "a"), "cacovid", str(tmp_path / "b"), "relevance"]
    )
    assert res.exit_code == 0, res.output
    assert "cacovid 66.7 % − relevance 33.3 % = +33.3 ± 33.3 points (paired s.e., n = 3)" in res.output
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), "cacovid", str(tmp_path / "b"), "random"])
    assert res.exit_code != 0 and "no item has both" in res.output
