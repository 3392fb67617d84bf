"""`cacovid eval --fastv-layer`: FastV-style selection ranks tokens at the decoder layer asked for."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cacovid.cli import app


def _keeps(out, layer: int) -> list:
    args = ["eval", "--methods", "fastv", "--no-references", "--ratios", "0.1", "--n", "2"]
    args += ["--world", "frames=4,target_frames=1:2", "--out", str(out), "--no-efficiency", "--no-report"]
    res = CliRunner().invoke(app, [*args, "--fastv-layer", str(layer)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["fastv", "fastv"]
    return [r["keep"] for r in rows]


def test_fastv_layer_changes_what_fastv_keeps(tmp_path):
    at_2 = _keeps(tmp_path / "l2", 2)
    assert _keeps(tmp_path / "l2-again", 2) == at_2  # deterministic
    assert _keeps(tmp_path / "l1", 1) != at_2
