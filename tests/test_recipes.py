"""Recipe files (`cacovid train --config`, `cacovid distill --config`): every shipped recipe loads, a
recipe resolves to the same run as its command line, the command line overrides the file, and unknown
keys are refused."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cacovid.cli.train import app, read_recipe, resolve_options
from cacovid.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
ALL_RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*") if p.suffix in (".json", ".yaml", ".yml"))
# Distillation recipes are named distill*.json; every other recipe is a `cacovid train` run.
DISTILL_RECIPES = [p for p in ALL_RECIPES if p.name.startswith("distill")]
RECIPES = [p for p in ALL_RECIPES if p not in DISTILL_RECIPES]
SHIPPED = ROOT / "recipes" / "toy" / "cacovid"


def _resolved(*args: str) -> dict:
    res = CliRunner().invoke(app, [*args, "--print-config"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _refused(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--print-config"])
    assert res.exit_code != 0
    return " ".join(res.output.split())  # the error box wraps lines


def test_the_shipped_policy_has_one_recipe_per_stage():
    assert [p.name for p in sorted(SHIPPED.glob("*.json"))] == [f"stage{n}.json" for n in range(1, 7)]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_loads(path: Path):
    recipe = read_recipe(path)
    assert isinstance(recipe.get("description"), str) and recipe["description"].strip()
    shown = _resolved("--config", str(path))
    config = TrainConfig.from_dict(shown["train_config"])
    for key, value in recipe.items():
        if key in shown["train_config"]:
            assert config.to_dict()[key] == value, key
        elif key != "description":
            assert shown["run"][key] == value, key


def test_the_stages_form_one_lineage():
    # Each stage starts from the policy the previous one ends with; the last is the shipped policy.
    runs = [_resolved("--config", str(SHIPPED / f"stage{n}.json"))["run"] for n in range(1, 7)]
    assert runs[0]["init_policy"] is None
    for before, after in itertools.pairwise(runs):
        ends = f"{before['out']}/checkpoint/policy" if before["stop_at"] else f"{before['out']}/policy"
        assert after["init_policy"] == ends
    assert runs[-1]["novelty_weight"] == 4.0  # the shipped policy's prior weight
    shipped = json.loads((ROOT / "src/cacovid/policy/shipped/toy/config.json").read_text())
    assert shipped["novelty_weight"] == runs[-1]["novelty_weight"]


def test_a_recipe_equals_its_command_line():
    line = shlex.split(
        "--preset paper --model toy --reward dense --ratio 0.06 --fixed-ratio --kl-coef 0.1 "
        "--layer-lr-scale 0 --init-policy runs/p4/policy --band-beta 6 --band-group 4 --group-size 64 "
        "--lr 2e-4 --n-items 700 --world preset=classic,seed_offset=9000000 --out runs/p5"
    )
    assert _resolved("--config", str(SHIPPED / "stage5.json")) == _resolved(*line)


def test_the_paper_preset_is_the_paper_recipe_under_the_file_and_the_command_line(tmp_path):
    from cacovid.train.config import PAPER

    shown = _resolved("--preset", "paper")
    assert shown["train_config"] == TrainConfig.paper().to_dict() != TrainConfig().to_dict()
    assert shown["run"]["question_match_dim"] == 0 and shown["run"]["val_selection"] is None
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"preset": "paper", "lr": 3e-4}))
    shown = _resolved("--config", str(path), "--group-size", "8")
    assert shown["train_config"] == TrainConfig.paper(lr=3e-4, group_size=8).to_dict()
    assert set(PAPER) == {
        k for k, v in TrainConfig().to_dict().items() if TrainConfig.paper().to_dict()[k] != v
    }
    assert "choose one of answer-only, paper" in _refused("--preset", "grpo")


def test_the_context_term_needs_the_question_match_term():
    assert _resolved()["run"]["context_width"] == 32  # the default is the decoys recipe's policy
    assert "give --question-match-dim > 0" in _refused("--question-match-dim", "0")
    assert _resolved("--question-match-dim", "0", "--context-width", "0")["run"]["context_width"] == 0


def test_the_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"lr": 3e-4, "n_items": 50, "adapt_ratio": False, "warmup_fraction": 0.2}))
    shown = _resolved("--config", str(path), "--lr", "1e-4", "--adapt-ratio")
    assert shown["train_config"]["lr"] == 1e-4  # given explicitly, even at its default value
    assert shown["train_config"]["adapt_ratio"] is True
    assert shown["run"]["n_items"] == 50 and shown["train_config"]["warmup_fraction"] == 0.2
    assert _resolved("--config", str(path))["train_config"]["lr"] == 3e-4


def test_unknown_or_mistyped_keys_are_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"lr": 1e-3, "token_scope": "video", "n-items": 5}))
    assert "unknown recipe keys ['n-items', 'token_scope']" in _refused("--config", str(path))
    path.write_text(json.dumps({"n_items": "many"}))
    assert "'n_items': expected int" in _refused("--config", str(path))
    path.write_text(json.dumps({"dual_clip": "yes"}))
    assert "'dual_clip'" in _refused("--config", str(path))
    path.write_text(json.dumps([1, 2]))
    assert "one object" in _refused("--config", str(path))
    assert "no recipe file" in _refused("--config", str(tmp_path / "missing.json"))


def test_yaml_recipes_read_like_json(tmp_path):
    yaml_path = tmp_path / "r.yaml"
    yaml_path.write_text("description: a test\nlr: 0.001\nval_ratios: [0.5, 0.1]\ndual_clip: null\n")
    json_path = tmp_path / "r.json"
    json_path.write_text(json.dumps({"lr": 0.001, "val_ratios": "0.5,0.1", "dual_clip": None}))
    shown = _resolved("--config", str(yaml_path))
    assert shown == _resolved("--config", str(json_path))
    assert shown["train_config"]["val_ratios"] == [0.5, 0.1] and shown["train_config"]["dual_clip"] is None


# ---- cacovid distill --config ----------------------------------------------------------------------
def _distilled(*args: str) -> dict:
    from cacovid.cli import app as cli

    res = CliRunner().invoke(cli, ["distill", *args, "--print-config"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _distill_refused(*args: str) -> str:
    from cacovid.cli import app as cli

    res = CliRunner().invoke(cli, ["distill", *args, "--print-config"])
    assert res.exit_code != 0
    return " ".join(res.output.split())


@pytest.mark.parametrize("path", DISTILL_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_distill_recipe_loads(path: Path):
    recipe = read_recipe(path)
    assert isinstance(recipe.get("description"), str) and recipe["description"].strip()
    shown = _distilled("--config", str(path))
    assert {k: v for k, v in recipe.items() if k != "description"} == {
        k: shown[k] for k in recipe if k in shown
    }


def test_the_supervised_decoys_reference_is_what_its_recipe_says():
    recipe = read_recipe(ROOT / "recipes/toy/cacovid-decoys/distill.json")
    shipped = json.loads((ROOT / "src/cacovid/policy/shipped/toy-decoys-supervised/config.json").read_text())
    for key in ("question_match_dim", "context_width"):
        assert shipped[key] == recipe[key], key


def test_the_decoys_policy_is_what_its_recipe_says():
    run, _ = resolve_options({}, read_recipe(ROOT / "recipes/toy/cacovid-decoys/rl.yaml"))
    shipped = json.loads((ROOT / "src/cacovid/policy/shipped/toy-decoys/config.json").read_text())
    assert shipped["question_match_dim"] == run.question_match_dim
    assert shipped["question_match_init"] == run.question_match_init == "query"
    assert shipped["context_width"] == run.context_width
    selection = json.loads((ROOT / "src/cacovid/policy/shipped/toy-decoys/selection.json").read_text())
    assert (selection["alpha"], selection["fill"]) == (0.0, "score")  # the global top-K it was validated with


def test_distill_command_line_overrides_and_bad_keys(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"description": "x", "epochs": 3, "lr": 0.003, "out": "runs/x"}))
    shown = _distilled("--config", str(path), "--epochs", "1")
    assert (shown["epochs"], shown["lr"], shown["out"]) == (1, 0.003, "runs/x")
    assert _distilled("--config", str(path))["epochs"] == 3
    path.write_text(json.dumps({"epoch": 3}))
    assert "unknown recipe keys ['epoch']" in _distill_refused("--config", str(path))
    for bad in ({"epochs": 2.5}, {"epochs": "three"}, {"lr": True}, {"epochs": 0}):
        path.write_text(json.dumps(bad))
        assert f"recipe key '{next(iter(bad))}'" in _distill_refused("--config", str(path)), bad
    assert "no recipe file" in _distill_refused("--config", str(tmp_path / "missing.json"))


def test_the_sampler_option_reaches_the_train_config(tmp_path):
    recipe = tmp_path / "naive.json"
    recipe.write_text(json.dumps({"description": "x", "frame_share": 0.0, "content_rollout": False}))
    shown = _resolved("--config", str(recipe), "--sampler", "naive", "--out", "runs/x")
    assert TrainConfig.from_dict(shown["train_config"]).sampler == "naive"
    assert TrainConfig.from_dict(_resolved("--out", "runs/x")["train_config"]).sampler == "gumbel"
    assert TrainConfig.from_dict(_resolved("--preset", "paper")["train_config"]).sampler == "modes"
    # the paper's preset has frame mode on, which the naive sampler does not have
    assert "naive" in _refused("--preset", "paper", "--sampler", "naive", "--out", "runs/x")
