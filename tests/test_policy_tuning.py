"""Choosing a policy's α / cap / fill on validation items (`cacovid tune-selection`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cacovid.cli import app
from cacovid.data.synthetic import SyntheticWorld
from cacovid.evaluate.methods import selection_options
from cacovid.models import load_video_llm
from cacovid.policy import CaCoVIDPolicy
from cacovid.train.tuning import tune_selection, write_selection

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "cacovid" / "policy" / "shipped" / "toy"


@pytest.fixture(scope="module")
def toy():
    adapter = load_video_llm("toy")
    items = list(SyntheticWorld().items("val", 4))
    with torch.inference_mode():
        prompts = [adapter.encode_item(it) for it in items]
    return adapter, CaCoVIDPolicy.from_pretrained(SHIPPED, host=adapter), prompts, items


def _chosen(best, table):
    rows = [
        r
        for r in table
        if (r["alpha"], r["fill"], r["cap"]) == (best["alpha"], best["fill"], best.get("cap"))
    ]
    assert len(rows) == 1
    return rows[0]


def test_tune_selection_tries_the_grid_and_keeps_the_most_accurate(toy):
    adapter, policy, prompts, items = toy
    best, table = tune_selection(adapter, policy, prompts, items, [0.1, 0.25], tolerance=0.0)
    # 3 alphas x 2 caps x 2 fills, minus the second fill rule at alpha = 1 (nothing left to fill),
    # plus alpha = 0 once (score fill; no frame shares, so no cap)
    assert len(table) == 11
    assert {(r["alpha"], r["fill"]) for r in table if r["alpha"] == 1.0} == {(1.0, "even")}
    assert [(r["alpha"], r["fill"]) for r in table if r["alpha"] == 0.0] == [(0.0, "score")]
    top = max(r["accuracy"] for r in table)
    assert _chosen(best, table)["accuracy"] == top
    assert all(len(r["per_ratio"]) == 2 and 0 <= r["evidence_recall"] <= 1 for r in table)


def test_tune_selection_breaks_near_ties_by_recall(toy):
    adapter, policy, prompts, items = toy
    # 4 items x 2 ratios: the default tolerance is one standard error of the best accuracy
    best, table = tune_selection(adapter, policy, prompts, items, [0.1, 0.25])
    top = max(r["accuracy"] for r in table)
    se = (top * (1 - top) / 8) ** 0.5
    close = [r for r in table if r["accuracy"] >= top - se - 1e-9]
    assert _chosen(best, table)["evidence_recall"] == max(r["evidence_recall"] for r in close)
    # a tolerance wider than every gap makes it the best recall of all
    best, table = tune_selection(adapter, policy, prompts, items, [0.1, 0.25], tolerance=1.0)
    assert _chosen(best, table)["evidence_recall"] == max(r["evidence_recall"] for r in table)
    with pytest.raises(ValueError, match="tolerance"):
        tune_selection(adapter, policy, prompts, items, [0.1], tolerance=-0.1)


def test_tune_selection_by_accuracy_reads_no_annotation(toy):
    import dataclasses

    adapter, policy, prompts, items = toy
    best, table = tune_selection(adapter, policy, prompts, items, [0.1, 0.25], by="accuracy")
    top = max(r["accuracy"] for r in table)
    assert _chosen(best, table)["accuracy"] == top
    assert _chosen(best, table) is next(r for r in table if r["accuracy"] == top)  # ties: the first tried
    bare = [dataclasses.replace(it, evidence=None, counterfactual=None) for it in items]
    with torch.inference_mode():
        bare_prompts = [adapter.encode_item(it) for it in bare]
    assert all(p.evidence_mask is None for p in bare_prompts)
    again, bare_table = tune_selection(adapter, policy, bare_prompts, bare, [0.1, 0.25], by="accuracy")
    assert again == best and all(r["evidence_recall"] is None for r in bare_table)
    with pytest.raises(ValueError, match="by must be one of"):
        tune_selection(adapter, policy, prompts, items, [0.1], by="recall_only")


def test_tune_selection_rejects_bad_input(toy):
    adapter, policy, prompts, items = toy
    with pytest.raises(ValueError, match="ratios"):
        tune_selection(adapter, policy, prompts, items, [1.5])
    with pytest.raises(ValueError, match="matching"):
        tune_selection(adapter, policy, prompts[:2], items, [0.1])


def test_written_selection_is_what_evaluation_reads(tmp_path):
    write_selection(tmp_path, {"alpha": 0.75, "cap": 1.0, "fill": "score"}, "test")
    assert selection_options(tmp_path) == {"alpha": 0.75, "cap": 1.0, "fill": "score"}
    with pytest.raises(ValueError, match="unknown"):
        write_selection(tmp_path, {"beta": 1}, "test")
    with pytest.raises(FileNotFoundError):
        write_selection(tmp_path / "missing", {"alpha": 0.5}, "test")


def test_cli_writes_selection_json_and_refuses_the_test_split(tmp_path):
    folder = tmp_path / "policy"
    shutil.copytree(SHIPPED, folder)
    (folder / "selection.json").unlink(missing_ok=True)
    runner = CliRunner()
    refused = runner.invoke(app, ["tune-selection", "--policy", str(folder), "--split", "test", "--n", "2"])
    assert refused.exit_code != 0 and "test split" in refused.output
    # the shipped classic policy is tuned on its own world (the default world is decoys)
    args = ["tune-selection", "--policy", str(folder), "--n", "3", "--ratios", "0.1"]
    result = runner.invoke(app, [*args, "--world", "preset=classic"])
    assert result.exit_code == 0, result.output
    saved = json.loads((folder / "selection.json").read_text())
    assert saved["alpha"] in (0.0, 0.5, 0.75, 1.0) and saved["fill"] in ("even", "score")
    assert "3 val items" in saved["note"]
