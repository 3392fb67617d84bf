"""Smoke tests of the benchmark scripts in bench/ and the diagnostics in bench/diagnostics/: each
`main(argv)` runs with its smallest settings on a tiny random model and returns / prints the table rows
it should. No timing is checked here: speed and memory figures belong to the benchmarks' own output."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from cacovid.selectors.registry import available_selectors

BENCH = Path(__file__).resolve().parents[1] / "bench"
WORLD = "frames=6"  # the smallest default-family world: 6 x 49 = 294 video tokens


def _bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import their shared helper `benchutil`
    return importlib.import_module(name)


def _selectors() -> list[str]:
    return [n for n in available_selectors() if n != "cacovid"] + ["cacovid"]


def test_selectors_speed_rows(llava_llm, capsys):
    mod = _bench("selectors_speed")
    argv = ["--repeats", "1", "--warmup", "0", "--world", WORLD, "--sizes", "model,7b"]
    argv += ["--big-frames", "2", "--big-side", "4", "--big-hidden", "64", "--big-policy", "on"]
    result = mod.main(argv, adapter=llava_llm)
    assert result["failed"] == []
    names = [*_selectors(), mod.SELECT_ONLY]
    got = {(r["size"], r["method"], r["ratio"]) for r in result["rows"]}
    want = {(size, m, ratio) for size in ("model", "7b") for m in names for ratio in (0.25, 0.1)}
    assert got == want
    assert result["shapes"]["model"]["video_tokens"] == 6 * 49
    assert result["shapes"]["7b"] == {
        "frames": 2,
        "tokens_per_frame": 16,
        "video_tokens": 32,
        "seq_len": 14 + 32 + 48,
        "hidden": 64,
    }
    for r in result["rows"]:
        n = result["shapes"][r["size"]]["video_tokens"]
        assert r["kept"] == int(r["ratio"] * n + 1e-9)
        assert r["median_ms"] is not None and r["median_ms"] >= 0
    out = capsys.readouterr().out
    for m in names:
        assert m in out
    assert "ranking only" in out  # the 7b FastV caveat is printed


def test_fake_prompt_is_7b_sized_by_default():
    mod = _bench("benchutil.shapes")
    prompt = mod.fake_prompt(frames=32, tokens_per_side=14, hidden=8)  # small hidden: cheap to build
    assert prompt.num_video_tokens == 6272 and prompt.video_grid == (32, 14, 14)
    assert prompt.extras["vision_attention"].shape == (6272,)
    assert prompt.evidence_mask is not None and bool(prompt.evidence_mask.any())


def test_selectors_speed_micro_model_and_json(tmp_path):
    mod = _bench("selectors_speed")
    path = tmp_path / "sel.json"
    argv = ["--model", "micro", "--sizes", "model", "--methods", "random,uniform", "--ratios", "0.5"]
    argv += ["--repeats", "1", "--warmup", "0", "--world", WORLD, "--json", str(path)]
    result = mod.main(argv)
    assert [(r["method"], r["ratio"]) for r in result["rows"]] == [("random", 0.5), ("uniform", 0.5)]
    assert path.is_file() and '"selectors_speed"' in path.read_text()


def test_selectors_speed_rejects_unknown_method():
    mod = _bench("selectors_speed")
    with pytest.raises(SystemExit):
        mod.main(["--methods", "nosuch", "--sizes", "7b"])


def test_prefill_rows(llava_llm, capsys):
    mod = _bench("prefill")
    argv = ["--items", "1", "--repeats", "1", "--warmup", "0", "--ratios", "0.25,0.1", "--world", WORLD]
    result = mod.main(argv, adapter=llava_llm)
    assert result["failed"] == []
    got = [(r["method"], r["ratio"]) for r in result["rows"]]
    want = [("full", 1.0)] + [
        (m, r) for m in ("random", "uniform", "divprune", "cacovid") for r in (0.25, 0.1)
    ]
    assert got == want
    full = result["rows"][0]
    assert full["kept_tokens"] == 6 * 49 and full["flops_fraction"] == pytest.approx(1.0)
    for r in result["rows"][1:]:
        assert r["kept_tokens"] == int(r["ratio"] * 6 * 49 + 1e-9)
        assert 0 < r["flops_fraction"] < 1
        for key in ("compression_ms", "prefill_ms", "ttft_ms", "encode_ms"):
            assert r[key] is not None and r[key] >= 0
    out = capsys.readouterr().out
    assert "TTFT" in out and "cacovid" in out and "divprune" in out


def test_reward_variance_rows(llava_llm, capsys):
    mod = _bench("diagnostics.reward_variance")
    argv = ["--items", "2", "--iterations", "1", "--group-size", "8", "--world", WORLD]
    result = mod.main(argv, adapter=llava_llm)
    assert [r["item"] for r in result["per_item"]] == ["synthetic:train:0", "synthetic:train:1"]
    assert [s["reward"] for s in result["summary"]] == ["accuracy", "dense"]
    for row in result["per_item"]:
        assert 0.0 <= row["accuracy_mean"] <= 1.0 and 0.0 <= row["dense_mean"] <= 1.0
        assert row["kept"] == 6  # r = 0.02 of 49 tokens rounds up to 1 per frame
    for s in result["summary"]:
        assert 0.0 <= s["zero_var_fraction"] <= 1.0
        assert s["ms_per_iteration"] is not None and s["ms_per_iteration"] > 0
    out = capsys.readouterr().out
    assert "synthetic:train:0" in out and "0-var groups" in out


def test_gradient_alignment_rows(llava_llm, capsys):
    mod = _bench("diagnostics.gradient_alignment")
    argv = ["--items", "2", "--start", "0", "--group-size", "8", "--world", WORLD]
    argv += ["--ratios", "0.12", "--rewards", "dense", "--eps", "0.0001,0.05"]
    result = mod.main(argv, adapter=llava_llm)
    assert 1 <= result["items"] <= 2 and result["policy"] == "untrained"
    assert [(r["ratio"], r["reward"], r["eps"]) for r in result["rows"]] == [
        (0.12, "dense", 0.0001),
        (0.12, "dense", 0.05),
    ]
    assert all(-1.0 <= r["cosine"] <= 1.0 for r in result["rows"])
    assert all((r["beta"], r["group"]) == (2.0, 2) for r in result["rows"])  # docs/method.md's sampler
    assert "RL gradient vs evidence gradient" in capsys.readouterr().out


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradient_alignment_sign_follows_a_reward_that_is_the_evidence(llava_llm, monkeypatch, sign):
    # With a reward that *is* (minus) the kept share of the evidence, the RL gradient must point (against)
    # along the evidence gradient: a sign error in either would flip the cosine.
    import cacovid.train.rewards as rewards

    def evidence_reward(adapter, rows, item):
        return torch.stack([sign * (keep & prompt.evidence_mask).float().sum() for prompt, keep, _ in rows])

    monkeypatch.setattr(rewards, "rollout_reward", lambda name: evidence_reward)
    mod = _bench("diagnostics.gradient_alignment")
    argv = ["--items", "6", "--start", "0", "--group-size", "32", "--world", WORLD]
    argv += ["--ratios", "0.12", "--rewards", "dense", "--eps", "0.0001"]
    result = mod.main(argv, adapter=llava_llm)
    assert sign * result["rows"][0]["cosine"] > 0.0  # exactly antisymmetric: same rollouts, A negated


def test_policy_diagnostics_rows(llava_llm, capsys, tmp_path):
    mod = _bench("diagnostics.policy_diagnostics")
    path = tmp_path / "diag.json"
    argv = ["--items", "2", "--world", WORLD, "--ratio", "0.25", "--json", str(path)]
    result = mod.main(argv, adapter=llava_llm)
    assert 1 <= result["items"] <= 2 and [r["policy"] for r in result["policies"]] == ["untrained"]
    row = result["policies"][0]
    for key in ("recall_top_k", "recall_own", "recall_defaults"):
        assert 0.0 <= row[key] <= 1.0
    assert 0.0 <= row["scores"]["evidence"]["mean_sigma"] <= 1.0
    assert "policy diagnostics" in capsys.readouterr().out and path.is_file()


def test_policy_diagnostics_figures_on_known_scores():
    mod = _bench("diagnostics.policy_diagnostics")
    T, P = 4, 10
    ev = torch.zeros(T, P, dtype=torch.bool)
    ev[1, :3] = True
    ev[2, 5] = True
    s = torch.where(ev, 5.0, 0.0) + torch.linspace(0, 1, T * P).reshape(T, P)
    u = torch.tensor([0.0, 2.0, 1.0, -1.0])
    out = mod.diagnose(s, u, ev, 0.1, {"defaults": {}, "global": {"alpha": 0.0, "fill": "score"}})
    assert out["recall_top_k"] == 1.0 and out["recall_global"] == 1.0
    assert out["token_auc_in_evidence_frames"] == 1.0 and out["frame_auc"] == 1.0
    flipped = mod.diagnose(-s, -u, ev, 0.1, {})
    assert flipped["recall_top_k"] == 0.0 and flipped["frame_auc"] == 0.0
    assert flipped["token_auc_in_evidence_frames"] == 0.0
    assert torch.equal(out["scores"]["hard_negative"], s.reshape(-1)[torch.zeros(0, dtype=torch.long)])
    assert out["recall_in_evidence_frames"] == 1.0 and out["hard_outside_evidence_frames"] is None
    # A frame without evidence outscoring everything: the top-K misses all evidence, every hard
    # negative sits outside the evidence frames, and a perfect frame ranking would recover it all.
    loud = s.clone()
    loud[3] = 10.0
    off = mod.diagnose(loud, u, ev, 0.1, {})
    assert off["recall_top_k"] == 0.0 and off["hard_outside_evidence_frames"] == 1.0
    assert off["recall_in_evidence_frames"] == 1.0
    with pytest.raises(ValueError, match="no evidence"):
        mod.diagnose(s, u, torch.zeros_like(ev), 0.1, {})


def test_accuracy_decomposition_rows(llava_llm, capsys, tmp_path):
    mod = _bench("diagnostics.accuracy_decomposition")
    path = tmp_path / "decomposition.json"
    argv = ["--methods", "uniform,random", "--items", "3", "--world", WORLD, "--ratios", "0.5"]
    result = mod.main([*argv, "--json", str(path)], adapter=llava_llm)
    assert [(r["method"], r["ratio"]) for r in result["rows"]] == [("uniform", 0.5), ("random", 0.5)]
    for r in result["rows"]:
        assert r["n"] + r["skipped"] == result["items"] >= 1
        assert all(0.0 <= r[v] <= 1.0 for v in mod.VARIANTS if r["n"])
    assert "accuracy decomposition" in capsys.readouterr().out and path.is_file()
    with pytest.raises(SystemExit, match="fastv"):
        mod.main(["--methods", "fastv", "--items", "1", "--world", WORLD], adapter=llava_llm)


def test_accuracy_decomposition_masks():
    from cacovid.ops.fill import even_fill

    mod = _bench("diagnostics.accuracy_decomposition")
    N = 20
    ev = torch.zeros(N, dtype=torch.bool)
    ev[[2, 3, 4]] = True
    keep = torch.zeros(N, dtype=torch.bool)
    keep[[3, 10, 11, 12, 13, 14]] = True  # one hit, five picks
    masks = mod.decomposition_masks(keep, ev)
    assert list(masks) == list(mod.VARIANTS)
    assert all(int(m.sum()) == 6 for m in masks.values())  # one budget for every variant
    assert torch.equal(masks["selector"], keep)
    assert torch.equal(masks["hits + even"] & ev, keep & ev)  # same hits, the picks replaced
    assert torch.equal(masks["hits + even"] & ~ev, even_fill(~ev, 5))
    assert torch.equal(masks["evidence + picks"], ev | even_fill(keep & ~ev, 3))  # all evidence + picks
    assert torch.equal(masks["evidence + even"], ev | even_fill(~ev, 3))
    with pytest.raises(ValueError, match="do not fit"):
        mod.decomposition_masks(keep & ev, ev)


def test_novelty_prior_overrides_the_weight(llava_llm, capsys, tmp_path):
    from cacovid.policy import CaCoVIDPolicy

    mod = _bench("diagnostics.novelty_prior")
    CaCoVIDPolicy.from_host(llava_llm, init_scale=1.0).save_pretrained(tmp_path)
    # α = 0 with the score fill is a global top-K by score: with a huge weight the prior decides it.
    (tmp_path / "selection.json").write_text(json.dumps({"alpha": 0.0, "fill": "score"}))
    argv = ["--policy", str(tmp_path), "--weights", "0,1e4", "--items", "3", "--world", WORLD]
    result = mod.main([*argv, "--ratios", "0.1,0.5"], adapter=llava_llm)
    rows = {(r["method"], r["ratio"]): r for r in result["rows"]}
    assert [m for m, _ in rows][::2] == ["novelty (prior alone)", "cacovid, w = 0", "cacovid, w = 10000"]
    for ratio in (0.1, 0.5):
        prior, primed = rows[("novelty (prior alone)", ratio)], rows[("cacovid, w = 10000", ratio)]
        assert primed["evidence_recall"] == prior["evidence_recall"]
        assert primed["accuracy"] == prior["accuracy"]
    assert "novelty prior" in capsys.readouterr().out


def test_selection_memory_quick(capsys, tmp_path):
    mod = _bench("selection_memory")
    out = tmp_path / "memory.json"
    result = mod.main(["--quick", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    assert [r["stage"] for r in result["rows"]] == list(mod.STAGES)
    assert all(r["ms"] is not None and r["ms"] > 0 for r in result["rows"])
    assert result["attn_implementation"] == "sdpa" and result["dtype"] == "float32"
    shape = result["shape"]
    assert shape["video_tokens"] == 2 * 16 and shape["length"] == 2 * 16 + 62
    assert 0 < result["kept"] <= shape["video_tokens"]
    heads, length = shape["heads"], shape["length"]
    assert result["eager_map_mb"] == pytest.approx(heads * length * length * 4 / 2**20)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("CaCoVID select at 94 tokens") and lines[-1] == result["headline"]
    assert json.loads(out.read_text())["headline"] == result["headline"]


def test_quality_quick(capsys, tmp_path):
    mod = _bench("quality")
    if not _bench("benchutil").toy_installed():
        pytest.skip("the shipped policies need the trained toy weights")
    path = tmp_path / "quality.json"
    result = mod.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(path)])
    assert result["worlds"] == ["preset=classic", "preset=decoys"] and result["items"] == 2
    baselines = [n for n in available_selectors() if n not in ("oracle", "fastv", "cacovid")]
    assert result["methods"] == ["full", "cacovid", *baselines]
    want = [(w, "full", 1.0) for w in result["worlds"][:1]]
    want += [(result["worlds"][0], m, 0.1) for m in ["cacovid", *baselines]]
    got = [(r["world"], r["method"], r["ratio"]) for r in result["rows"]]
    assert got[: len(want)] == want and len(got) == 2 * len(want)
    for r in result["rows"]:
        assert r["n"] == 2 and r["n_errors"] == 0 and 0.0 <= r["accuracy"] <= 1.0
        assert (r["question_sensitivity"] is not None) == (
            r["world"] == "preset=decoys" and r["method"] != "full"
        )
    heads = result["headlines"]
    assert [h["world"] for h in heads] == result["worlds"]
    ours = next(r for r in result["rows"] if r["world"] == "preset=decoys" and r["method"] == "cacovid")
    best = max(
        r["accuracy"] for r in result["rows"] if r["world"] == "preset=decoys" and r["method"] in baselines
    )
    assert heads[1]["margin"] == pytest.approx(100 * (ours["accuracy"] - best))
    lines = capsys.readouterr().out.strip().splitlines()
    assert "quality on preset=decoys" in "\n".join(lines) and lines[-2].startswith("headline: preset=classic")
    assert lines[-1] == result["headline"] and lines[-1].startswith("headline: preset=decoys CaCoVID")
    saved = json.loads(path.read_text())
    assert saved["headline"] == result["headline"] and len(saved["rows"]) == len(result["rows"])
    with pytest.raises(SystemExit, match="names no preset"):
        mod.main(["--quick", "--worlds", "frames=8"])
