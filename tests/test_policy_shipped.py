"""The CaCoVID policy shipped for the toy model, run the way it was tuned (its selection.json).

Guards against shipping a broken or saturated policy: on validation items its own selection must keep
most of the evidence, far more than uniform selection does, and its scores must stay in the range
where the training objective can still move them (see bench/diagnostics/policy_diagnostics.py).
README's headline figures are re-measured on a fixed sub-sample of the demo's test items, through the
same harness.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cacovid.data.sources import synthetic_source
from cacovid.data.synthetic import SyntheticWorld
from cacovid.evaluate import EvalConfig, build_methods, run_evaluation
from cacovid.evaluate.methods import selection_options
from cacovid.models import load_video_llm
from cacovid.policy import CaCoVIDPolicy
from cacovid.policy.selector import CaCoVIDSelector
from cacovid.selectors.registry import get_selector

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "cacovid" / "policy" / "shipped" / "toy"
# Measured on these 24 val items: 0.88 for stage 6 (stage 5: 0.82), uniform 0.11.
RECALL_10 = 0.7
# `cacovid demo --world preset=classic`'s figures on a sub-sample: the first 40 of its 200 test items,
# shipped toy model + shipped policy at 10 % retention, measured with the demo's harness (README's
# table reports all 200). Tolerances: two items of accuracy (a near-tie may flip with another torch
# build), 0.02 of recall.
HEADLINE_ITEMS = 40
HEADLINE_10 = {"accuracy": 0.925, "evidence_recall": 0.881}
HEADLINE_FULL_ACCURACY = 0.950
HEADLINE_TOLERANCE = {"accuracy": 0.05, "evidence_recall": 0.02}


@pytest.fixture(scope="module")
def shipped():
    adapter = load_video_llm("toy")
    policy = CaCoVIDPolicy.from_pretrained(SHIPPED, host=adapter)
    with torch.inference_mode():
        prompts = [adapter.encode_item(it) for it in SyntheticWorld().items("val", 24)]
    return policy, [p for p in prompts if p.evidence_mask is not None and bool(p.evidence_mask.any())]


def _recall(selector, prompts, ratio: float) -> float:
    out = []
    for p in prompts:
        keep = selector.select(p, ratio, generator=torch.Generator().manual_seed(0)).keep
        out.append(float((keep & p.evidence_mask).sum()) / float(p.evidence_mask.sum()))
    return sum(out) / len(out)


def test_shipped_policy_keeps_the_evidence_with_its_own_settings(shipped):
    policy, prompts = shipped
    ours = CaCoVIDSelector(policy, **selection_options(SHIPPED))
    uniform = get_selector("uniform")
    recall = _recall(ours, prompts, 0.1)
    assert recall >= RECALL_10
    assert recall >= 3 * _recall(uniform, prompts, 0.1)


def test_shipped_policy_scores_are_not_saturated(shipped):
    policy, prompts = shipped
    with torch.no_grad():
        s = torch.cat([policy(p).token_scores.float() for p in prompts])
    assert float(s.abs().median()) < 5.0  # 1.07 for stage 6 (0.39 for stage 5); over 100 for the retired one


def _rows_at_10(world: str, n: int, methods: list[str], policy: Path, out: Path) -> dict[str, dict]:
    """The harness's summary rows at 10 % on the first n test items of `world`, by method."""
    adapter = load_video_llm("toy")
    source = synthetic_source(world, split="test", n=n)
    built = build_methods(methods, adapter, policy=str(policy), seed=0)
    config = EvalConfig(ratios=[0.1], seed=0, keep_masks=False)
    return {r["method"]: r for r in run_evaluation(adapter, source, built, out, config)["rows"]}


def test_headline_figures_on_a_fixed_sample_of_the_demo(tmp_path):
    rows = _rows_at_10("preset=classic", HEADLINE_ITEMS, ["full", "cacovid"], SHIPPED, tmp_path)
    ours, full = rows["cacovid"], rows["full"]
    assert ours["n"] == HEADLINE_ITEMS and ours["ratio"] == pytest.approx(0.1)
    for key, want in HEADLINE_10.items():
        assert ours[key] == pytest.approx(want, abs=HEADLINE_TOLERANCE[key]), (key, ours)
    assert full["accuracy"] == pytest.approx(HEADLINE_FULL_ACCURACY, abs=HEADLINE_TOLERANCE["accuracy"])


# ---- the policies shipped for the decoys world ----------------------------------------------------
# The CaCoVID policy (answer-only RL, `toy-decoys`) and the reference supervised by evidence annotations
# (`toy-decoys-supervised`). Measured on the first 16 decoys test items at 10 % with the shipped toy
# model, through the harness: question sensitivity (how much of a decoy's evidence a policy keeps when
# asked about that decoy) and its base rate (what it keeps of the decoy when asked about the target);
# temporal novelty, which ignores the question, has a sensitivity equal to its base rate.
# docs/experiments.md reports 400 items (RL 0.80 vs 0.14, supervised 0.91 vs 0.15).
# Tolerance 0.1 around the measured values.
DECOYS_ITEMS = 16
DECOYS_POLICIES = {
    "toy-decoys": (0.78, 0.09),
    "toy-decoys-supervised": (0.93, 0.13),
}


@pytest.mark.parametrize("name", list(DECOYS_POLICIES))
def test_decoys_policies_read_the_question(tmp_path, name):
    sensitivity, base_rate = DECOYS_POLICIES[name]
    rows = _rows_at_10("preset=decoys", DECOYS_ITEMS, ["cacovid", "novelty"], SHIPPED.parent / name, tmp_path)
    ours, blind = rows["cacovid"], rows["novelty"]
    assert ours["question_sensitivity"] == pytest.approx(sensitivity, abs=0.1), ours
    assert ours["question_base_rate"] == pytest.approx(base_rate, abs=0.1), ours
    assert ours["question_sensitivity"] >= ours["question_base_rate"] + 0.4  # it follows the question
    assert blind["question_sensitivity"] == pytest.approx(blind["question_base_rate"], abs=1e-9)


def test_the_decoys_policy_says_how_it_was_made():
    import json

    record = json.loads((SHIPPED.parent / "toy-decoys" / "training.json").read_text())
    assert record["recipe"] == "recipes/toy/cacovid-decoys/rl.yaml"
    assert (Path(__file__).resolve().parents[1] / record["recipe"]).is_file()
    assert "no evidence annotations" in record["how"]
    assert record["host_forwards"]["rollouts"] > 0 and record["wall_minutes"]["total"] > 0
    from cacovid.cli.train import read_recipe

    recipe = read_recipe(Path(__file__).resolve().parents[1] / record["recipe"])
    assert record["host_forwards"]["blind_test"] == recipe["n_items"]  # the recipe's run, every item tested
    assert record["reward"] == recipe["reward"]
    assert record["rollouts_per_item"] == recipe["group_size"]
    assert record["host_forwards"]["rollouts"] % (2 * recipe["group_size"]) == 0  # two questions per rollout
