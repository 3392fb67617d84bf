"""The RL training benchmarks (bench/convergence.py, bench/reward.py and their shared
bench/benchutil/rl_runs.py): `--quick` runs on the micro model give every setting, monotone counters,
rollouts that match G and I, and a headline that is the one the rows give; the aggregation is checked
on curves with known answers. No timing is checked: the figures belong to the benchmarks' own
output."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import their shared helper `benchutil`
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def micro():
    return _bench("benchutil").load_model("micro", torch.device("cpu"))


def _check_runs(result, names, seeds):
    """Every (setting, seed) ran once; counters grow and match G, I and the items per step."""
    G, I, per_step = result["group_size"], result["iterations"], result.get("items_per_step", 1)
    got = sorted((r["name"], r["seed"]) for r in result["runs"])
    assert got == sorted((n, s) for n in names for s in range(seeds))
    for run in result["runs"]:
        curve = run["curve"]
        assert curve[0] == {**curve[0], "items": 0, "steps": 0, "rollouts": 0}
        n, every = result["train_items"], result["val_every"]
        ends = [min(n, k * per_step) for k in range(1, -(-n // per_step) + 1)]  # items after each round
        crossings = sum(1 for a, b in zip([0, *ends], ends, strict=False) if b // every > a // every)
        assert len(curve) == 1 + crossings
        for a, b in zip(curve, curve[1:], strict=False):
            assert b["items"] > a["items"] and b["steps"] > a["steps"] and b["rollouts"] > a["rollouts"]
        for p in curve:
            assert p["steps"] == -(-p["items"] // per_step) * I  # one step per iteration of a round
            assert p["rollouts"] == p["items"] * I * G  # every item's iteration answers exactly G rollouts
            assert 0.0 <= p["accuracy"] <= 1.0
        assert run["items"] == result["train_items"] and run["steps"] == -(-run["items"] // per_step) * I
        assert run["rollouts"] == run["items"] * I * G and run["reward_calls"] == run["items"] * I
        assert run["final_accuracy"] == curve[-1]["accuracy"]
        assert run["item_errors"] == 0
        assert run["train_seconds"] > 0 and run["validation_seconds"] > 0


def test_convergence_quick_has_every_sampler_and_a_consistent_headline(micro, capsys, tmp_path):
    conv = _bench("convergence")
    out = tmp_path / "conv.json"
    work = tmp_path / "work"
    result = conv.main(["--quick", "--model", "micro", "--out", str(out), "--work", str(work)], adapter=micro)
    assert list(conv.SAMPLERS) == ["modes", "naive", "gumbel"] and list(conv.STARTS) == ["fresh", "prior"]
    names = [f"{sampler}-{start}" for start in conv.STARTS for sampler in conv.SAMPLERS]
    assert result["settings"] == names
    _check_runs(result, names, 1)
    modes = {r["name"]: r["mode_counts"] for r in result["runs"]}
    G = result["group_size"]
    for start in conv.STARTS:
        assert modes[f"naive-{start}"] == modes[f"gumbel-{start}"] == [G, 0, 0]
        assert modes[f"modes-{start}"][0] > 0 and modes[f"modes-{start}"][1] > 0
    inits = {r["name"]: r["config"]["question_match_init"] for r in result["runs"]}
    assert {inits[f"{s}-fresh"] for s in conv.SAMPLERS} == {"zero"}
    assert {inits[f"{s}-prior"] for s in conv.SAMPLERS} == {"query"}
    assert {r["config"]["reward"] for r in result["runs"]} == {"logodds"}
    per = result["summary"]["per_setting"]
    assert list(per) == names
    # The headline is the one the rows give: the target is 90 % of the best setting's mean final
    # accuracy and each setting's figure is the first point of its mean curve that reaches it.
    best = max(per[n]["final"]["mean"] for n in names)
    target = 0.9 * best
    assert result["summary"]["target"] == pytest.approx(target)
    for name, row in per.items():
        hit = next((p for p in row["curve"] if p["accuracy"] >= target - 1e-12), None)
        assert row["rollouts_to_target"] == (None if hit is None else hit["rollouts"])
        shown = "not reached" if hit is None else f"{hit['rollouts']:.0f}"
        assert f"{name} {shown}" in result["headline"]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[-1] == result["headline"] and lines[-1].startswith("headline: ")
    assert json.loads(out.read_text())["headline"] == result["headline"]
    # Finished runs are saved: a second call loads them instead of training again.
    again = conv.main(["--quick", "--model", "micro", "--work", str(work)], adapter=micro)
    assert "loaded from" in capsys.readouterr().out
    assert [r["curve"] for r in again["runs"]] == [r["curve"] for r in result["runs"]]


def test_convergence_rejects_an_unknown_sampler(micro):
    conv = _bench("convergence")
    with pytest.raises(SystemExit, match="global"):
        conv.main(["--quick", "--model", "micro", "--samplers", "modes,global"], adapter=micro)
    with pytest.raises(SystemExit, match="warm"):
        conv.main(["--quick", "--model", "micro", "--starts", "fresh,warm"], adapter=micro)


def test_reward_quick_has_both_rewards_and_a_consistent_headline(micro, capsys, tmp_path):
    rew = _bench("reward")
    result = rew.main(["--quick", "--model", "micro", "--out", str(tmp_path / "r.json")], adapter=micro)
    _check_runs(result, ["accuracy", "dense"], 1)
    assert {r["config"]["reward"] for r in result["runs"]} == {"accuracy", "dense"}
    per = result["summary"]["per_setting"]
    assert list(per) == ["accuracy", "dense"]
    acc, dense = per["accuracy"], per["dense"]
    ratio = dense["train_seconds_per_item"]["mean"] / acc["train_seconds_per_item"]["mean"]
    assert result["time_ratio_dense_to_accuracy"] == pytest.approx(ratio)
    # The micro host never answers right: the accuracy reward is 0 everywhere, every group flat;
    # the dense reward is a probability strictly inside (0, 1) and varies.
    assert acc["mean_training_reward"] == 0.0 and acc["zero_variance"]["zero_var"] == 1.0
    assert 0.0 < dense["mean_training_reward"] < 1.0 and dense["zero_variance"]["zero_var"] == 0.0
    head = result["headline"]
    assert f"accuracy reward {100 * acc['final']['mean']:.1f} ± {100 * acc['final']['std']:.1f}" in head
    assert f"dense {100 * dense['final']['mean']:.1f} ± {100 * dense['final']['std']:.1f}" in head
    assert f"{ratio:.2f}×" in head
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[-1] == head


def _run(name, seed, accs, G=8, I=2):
    curve = [
        {"items": i, "steps": i * I, "rollouts": i * I * G, "accuracy": a, "evidence_recall": 0.1}
        for i, a in enumerate(accs)
    ]
    return {
        "name": name,
        "seed": seed,
        "curve": curve,
        "final_accuracy": accs[-1],
        "train_seconds_per_item": 1.0,
        "reward_seconds": 0.5,
        "items": len(accs) - 1,
        "rollouts": curve[-1]["rollouts"],
        "item_errors": 0,
    }


def test_summarise_finds_the_rollouts_to_the_target():
    rl = _bench("benchutil.rl_runs")
    runs = [
        _run("a", 0, [0.2, 0.5, 0.8]),
        _run("a", 1, [0.2, 0.7, 0.6]),  # mean curve 0.2, 0.6, 0.7: final 0.7, target 0.665
        _run("b", 0, [0.2, 0.3, 0.7]),
        _run("b", 1, [0.2, 0.3, 0.64]),  # mean 0.67 at the last point only
        _run("c", 0, [0.2, 0.3, 0.4]),
    ]
    s = rl.summarise(runs, ["a", "b", "c"], "a", 0.95)
    assert s["reference_final"] == pytest.approx(0.7) and s["target"] == pytest.approx(0.665)
    per = s["per_setting"]
    assert per["a"]["rollouts_to_target"] == 2 * 2 * 8  # the mean curve reaches it at its last point
    assert per["a"]["rollouts_to_target_per_seed"] == [32, 16]  # seed 1 already at its first update
    assert per["b"]["rollouts_to_target"] == 32 and per["b"]["rollouts_to_target_per_seed"] == [32, None]
    assert per["c"]["rollouts_to_target"] is None and per["c"]["rollouts_to_target_per_seed"] == [None]
    assert per["a"]["final"] == pytest.approx({"mean": 0.7, "std": 0.1, "min": 0.6, "max": 0.8, "n": 2})
    assert per["a"]["best"]["mean"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="different lengths"):
        rl.mean_curve([_run("a", 0, [0.1, 0.2]), _run("a", 1, [0.1])])


def test_reward_zero_variance_counts_groups_per_mode():
    rew = _bench("reward")
    run = {
        "mode_counts": [3, 2, 1],  # token, token, token, frame, frame, content
        "rewards": [[1, 1, 1, 0, 1, 0], [0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]],
    }
    zv = rew.zero_variance([run])
    assert zv["zero_var"] == pytest.approx(1 / 3)
    assert zv["zero_var_token"] == pytest.approx(2 / 3)
    assert zv["zero_var_frame"] == pytest.approx(2 / 3)
    assert rew.mean_reward([run]) == pytest.approx(8 / 18)


def test_headline_line_format_is_stable():
    conv = _bench("convergence")
    result = {
        "ratio": 0.1,
        "summary": {
            "target": 0.5,
            "reference": "gumbel-prior",
            "reference_final": 0.5 / 0.9,
            "per_setting": {
                "gumbel-prior": {
                    "rollouts_to_target": 64.0,
                    "rollouts_to_target_per_seed": [48.0, 64.0, 96.0],
                    "seeds": [0, 1, 2],
                },
                "modes-fresh": {
                    "rollouts_to_target": None,
                    "rollouts_to_target_per_seed": [None, None, None],
                    "seeds": [0, 1, 2],
                },
            },
        },
    }
    text = conv.headline_text(result)
    assert re.search(r"gumbel-prior 64 \(seeds 48–96, 3/3 reached\), modes-fresh not reached$", text)
    assert "target 50.0 %" in text and "gumbel-prior 55.6 %" in text


def test_runs_from_a_saved_policy_validate_with_its_selection(tmp_path):
    rl = _bench("benchutil.rl_runs")
    assert rl.validation_selection(None) == {}  # a fresh policy: docs/method.md §3's defaults
    (tmp_path / "selection.json").write_text(json.dumps({"alpha": 0.75, "fill": "score", "note": "x"}))
    assert rl.validation_selection(str(tmp_path)) == {"alpha": 0.75, "fill": "score"}
