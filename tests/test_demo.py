"""`cacovid demo` end to end on the shipped toy model and policy (few items, one ratio)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from typer.testing import CliRunner

from cacovid.cli import app

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "cacovid" / "policy" / "shipped" / "toy"
SHIPPED_DECOYS = SHIPPED.parent / "toy-decoys"


def _demo(*args: str, progress: bool = False, workers: int = 1):
    """Run `cacovid demo ARGS --threads 1` on `workers` processes (one unless a test is about
    workers), restoring the caller's torch threads. CliRunner's output is not a terminal."""
    n = torch.get_num_threads()
    flags = ["--progress" if progress else "--no-progress", "--threads", "1", "--workers", str(workers)]
    try:
        return CliRunner().invoke(app, ["demo", *args, *flags])
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


def test_demo_retrain_on_the_decoys_world_trains_the_shipped_kind_of_policy_from_answers(tmp_path):
    # keys without a preset change the default world, decoys
    result = _demo(
        "--out", str(tmp_path), "--retrain", "--train-items", "2", "--n", "2", "--ratios", "0.25",
        "--world", "frames=4,target_frames=2:3", "--methods", "random",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "training a CaCoVID policy on 2 items (from the answers alone" in result.output
    recipe = json.loads((tmp_path / "policy-training" / "train_config.json").read_text())
    assert (recipe["sampler"], recipe["reward"], recipe["advantage"]) == (
        "gumbel",
        "logodds_contrast",
        "leave_one_out",
    )
    # how far it got against the shipped policy, on the same items
    assert "the shipped one" in result.output and (tmp_path / "shipped-policy" / "summary.json").is_file()
    world = json.loads((tmp_path / "summary.json").read_text())["world"]
    assert (world["num_decoys"], world["frames"]) == (7, 4)
    assert (tmp_path / "policy-training" / "log.jsonl").is_file()
    trained = json.loads((tmp_path / "policy" / "config.json").read_text())
    shipped = json.loads((SHIPPED_DECOYS / "config.json").read_text())
    for key in ("question_match_dim", "question_match_init", "context_width", "novelty_weight"):
        assert trained[key] == shipped[key], key
    summary = json.loads((tmp_path / "summary.json").read_text())
    (random_row,) = [r for r in summary["rows"] if r["method"] == "random"]
    assert random_row["question_sensitivity"] == random_row["question_base_rate"]
    assert f"({random_row['question_base_rate']:.3f})" in result.output  # the table's column


def test_demo_names_a_bad_world(tmp_path):
    result = _demo("--out", str(tmp_path), "--world", "preset=nope")
    assert result.exit_code != 0 and "unknown world preset 'nope'" in result.output


def test_demo_writes_plain_progress_lines_to_a_log(tmp_path):
    """`cacovid demo > log`: a line per tenth of the items (here every item), before the table."""
    result = _demo(
        "--out", str(tmp_path), "--n", "5", "--ratios", "0.1", "--methods", "random", progress=True
    )
    assert result.exit_code == 0, result.output
    before_table = result.output.split("CaCoVID vs baselines")[0]
    lines = [line for line in before_table.splitlines() if line.startswith("eval ")]
    assert [line.split(" | ")[0] for line in lines] == [f"eval {k}/5 items ({20 * k}%)" for k in range(1, 6)]
    assert all(re.search(r" \| [0-9hms]+ elapsed", line) for line in lines)
    assert re.search(r" \| ~[0-9hms]+ left \| synthetic:test:2: \d+ rows, 0 errors$", lines[2])


def test_demo_answers_rows_in_calls_of_one_length(tmp_path, monkeypatch):
    """Rows of different lengths never share a generate call: no row pays for another's padding."""
    from cacovid.models.base import VideoLLM

    lengths: list[set[int]] = []
    real = VideoLLM.generate_rows

    def recording(self, rows, **kwargs):
        lengths.append(
            {p.inputs_embeds.shape[0] - p.num_video_tokens + int(keep.sum()) for p, keep, *_ in rows}
        )
        return real(self, rows, **kwargs)

    monkeypatch.setattr(VideoLLM, "generate_rows", recording)
    result = _demo("--out", str(tmp_path), "--n", "2", "--ratios", "0.2,0.1", "--methods", "random")
    assert result.exit_code == 0, result.output
    # per item: full, blind, and one call per ratio (cacovid, random and oracle rows share it)
    assert len(lengths) == 2 * 4 and all(len(group) == 1 for group in lengths)


def test_demo_on_two_workers_gives_the_figures_of_one(tmp_path):
    """Items split between two processes; process 0 merges the rows: the same files, bit for bit
    (but the measured compression times)."""
    args = ["--n", "3", "--ratios", "0.1", "--methods", "random", "--world", "frames=4,target_frames=2:3"]
    one = _demo("--out", str(tmp_path / "one"), *args)
    two = _demo("--out", str(tmp_path / "two"), *args, workers=2)
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    assert re.search(r"on\s+2\s+workers", two.output) and not re.search(r"on\s+\d+\s+workers", one.output)

    def rows(folder: str, name: str) -> list[dict]:
        text = (tmp_path / folder / name).read_text()
        found = (
            json.loads(text)["rows"] if name.endswith(".json") else [json.loads(x) for x in text.splitlines()]
        )
        return [{k: v for k, v in row.items() if k != "compression_ms"} for row in found]

    assert rows("two", "summary.json") == rows("one", "summary.json")
    assert rows("two", "items.jsonl") == rows("one", "items.jsonl")
