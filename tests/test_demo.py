"""`cacovid demo` end to end on the shipped toy model and policy (few items, one ratio)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from cacovid.cli import app

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "cacovid" / "policy" / "shipped" / "toy"
SHIPPED_DECOYS = SHIPPED.parent / "toy-decoys"


def _demo(*args: str):
    """Run `cacovid demo ARGS --no-progress --threads 1`, restoring the caller's torch threads."""
    n = torch.get_num_threads()
    try:
        return CliRunner().invoke(app, ["demo", *args, "--no-progress", "--threads", "1"])
    finally:
        torch.set_num_threads(n)


def test_demo_writes_the_report_folder_with_the_shipped_policy(tmp_path):
    result = _demo("--out", str(tmp_path), "--n", "3", "--ratios", "0.1")
    assert result.exit_code == 0, result.output
    assert "using the shipped policy" in result.output and "CaCoVID vs baselines" in result.output
    assert "toy-decoys" in result.output  # the default world is the decoys world, with its own policy
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world"]["num_decoys"] == 7
    rows = {(r["method"], r["ratio"]) for r in summary["rows"]}
    assert {("cacovid", 0.1), ("random", 0.1), ("uniform", 0.1), ("novelty", 0.1), ("full", 1.0)} <= rows
    assert ("relevance", 0.1) in rows
    (row,) = [r for r in summary["rows"] if r["method"] == "cacovid"]
    assert f"({row['question_base_rate']:.3f})" in result.output  # the question-sensitivity column
    lines = (tmp_path / "items.jsonl").read_text().splitlines()
    assert {json.loads(line)["item_id"] for line in lines} == {f"synthetic:test:{i}" for i in range(3)}
    assert (tmp_path / "report.md").is_file()
    # the policy and the selection settings tuned for it are saved beside the results
    saved = json.loads((tmp_path / "policy" / "config.json").read_text())
    assert saved["context_width"] == json.loads((SHIPPED_DECOYS / "config.json").read_text())["context_width"]
    shipped = json.loads((SHIPPED_DECOYS / "selection.json").read_text())
    assert json.loads((tmp_path / "policy" / "selection.json").read_text()) == shipped


def test_demo_on_the_classic_world_uses_its_own_policy(tmp_path):
    result = _demo("--out", str(tmp_path), "--n", "2", "--ratios", "0.1", "--world", "preset=classic")
    assert result.exit_code == 0, result.output
    assert "using the shipped policy" in result.output and "toy-decoys" not in result.output
    assert "sensitivity" not in result.output  # the classic world asks no counterfactuals
    shipped = json.loads((SHIPPED / "selection.json").read_text())
    assert json.loads((tmp_path / "policy" / "selection.json").read_text()) == shipped
    assert json.loads((tmp_path / "policy" / "config.json").read_text())["novelty_weight"] == 4.0


def test_demo_retrain_trains_with_the_shipped_recipe(tmp_path):
    result = _demo(
        "--out", str(tmp_path), "--retrain", "--train-items", "2", "--n", "2", "--ratios", "0.25",
        "--world", "preset=classic,frames=4,target_frames=1:2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    recipe = json.loads((tmp_path / "policy-training" / "train_config.json").read_text())
    assert (recipe["reward"], recipe["kl_coef"], recipe["ratio"], recipe["adapt_ratio"]) == (
        "dense",
        0.1,
        0.06,
        False,
    )
    assert (tmp_path / "policy" / "model.safetensors").is_file()
    shipped = json.loads((SHIPPED / "config.json").read_text())
    trained = json.loads((tmp_path / "policy" / "config.json").read_text())
    assert trained["novelty_weight"] == shipped.get("novelty_weight", 0.0)  # the same kind of policy
    assert not (tmp_path / "policy" / "selection.json").exists()  # nothing was tuned for it
    assert {r["method"] for r in json.loads((tmp_path / "summary.json").read_text())["rows"]} >= {"cacovid"}


def test_demo_retrain_on_the_decoys_world_distils_the_shipped_kind_of_policy(tmp_path):
    # keys without a preset change the default world, decoys
    result = _demo(
        "--out", str(tmp_path), "--retrain", "--train-items", "2", "--n", "2", "--ratios", "0.25",
        "--world", "frames=4,target_frames=2:3", "--methods", "random",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "distilling a CaCoVID policy" in result.output
    world = json.loads((tmp_path / "summary.json").read_text())["world"]
    assert (world["num_decoys"], world["frames"]) == (7, 4)
    assert (tmp_path / "policy-training" / "log.jsonl").is_file()
    trained = json.loads((tmp_path / "policy" / "config.json").read_text())
    shipped = json.loads((SHIPPED_DECOYS / "config.json").read_text())
    for key in ("question_match_dim", "context_width", "novelty_weight"):
        assert trained[key] == shipped[key], key
    summary = json.loads((tmp_path / "summary.json").read_text())
    (random_row,) = [r for r in summary["rows"] if r["method"] == "random"]
    assert random_row["question_sensitivity"] == random_row["question_base_rate"]
    assert f"({random_row['question_base_rate']:.3f})" in result.output  # the table's column


def test_demo_names_a_bad_world(tmp_path):
    result = _demo("--out", str(tmp_path), "--world", "preset=nope")
    assert result.exit_code != 0 and "unknown world preset 'nope'" in result.output
