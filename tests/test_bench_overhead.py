"""Tests of bench/overhead.py: pooled CaCoVID is the library's pool option (the shipped policy rerun
pooled, or a policy trained pooled), the quality part pairs its items, and the benchmark's quick run
gives every row it should with sane relations (never a wall-clock threshold). The pool option itself is
tested in tests/test_policy_pooling.py."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from cacovid.policy import CaCoVIDPolicy, CaCoVIDSelector
from cacovid.selectors.registry import available_selectors
from cacovid.types import token_budget

BENCH = Path(__file__).resolve().parents[1] / "bench"
WORLD = "frames=6"


def _bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import their shared helper `benchutil`
    return importlib.import_module(name)


def _pooled_policy(adapter, folder: Path, k: int = 2, **fields) -> Path:
    """A policy saved at pool size k for `adapter`, with selection settings beside it."""
    from cacovid.policy.settings import write_selection

    CaCoVIDPolicy.from_host(adapter, pool_size=k, **fields).save_pretrained(folder)
    write_selection(folder, {"alpha": 0.25, "fill": "score"}, note="test")
    return folder


def test_pooled_cacovid_is_the_library_option(llava_llm, tmp_path):
    mod = _bench("overhead")
    policy = CaCoVIDPolicy.from_host(llava_llm, question_match_dim=8)
    base = CaCoVIDSelector(policy, alpha=0.75, fill="score")
    method = mod.pooled_method(llava_llm, base, pool=2, pooled_policy=None)
    assert method.name == "cacovid-pool2" and isinstance(method.selector, CaCoVIDSelector)
    assert method.selector.policy.config.pool_size == 2 and policy.config.pool_size == 1
    assert (method.selector.alpha, method.selector.cap, method.selector.fill) == (0.75, None, "score")
    for a, b in zip(method.selector.policy.parameters(), policy.parameters(), strict=True):
        assert torch.equal(a, b)  # the same weights, only pooled
    folder = _pooled_policy(llava_llm, tmp_path / "pooled", context_width=0)
    trained = mod.pooled_method(llava_llm, base, pool=2, pooled_policy=str(folder))
    assert trained.name == "cacovid-pool2-trained"
    assert trained.selector.policy.config.pool_size == 2
    assert (trained.selector.alpha, trained.selector.fill) == (0.25, "score")  # its own selection.json
    # The analytic cost: the layer and heads on the pooled sequence, the terms on the full grid.
    prompt = llava_llm.encode_item(_bench("benchutil").synthetic_items(1, WORLD)[0])
    config = policy.config.text_config
    full, pooled = (
        mod.selector_flops(base, config, prompt),
        mod.selector_flops(method.selector, config, prompt),
    )
    assert mod.term_flops(policy, prompt) < pooled < full


def test_overhead_takes_a_policy_trained_pooled(llava_llm, tmp_path):
    mod = _bench("overhead")
    folder = _pooled_policy(llava_llm, tmp_path / "pooled", k=3, question_match_dim=4, novelty_weight=1.0)
    result = mod.main(["--quick", "--parts", "7b", "--no-full-model", "--pooled-policy", str(folder)])
    assert result["pool"] == 3 and result["pooled_policy"] == str(folder)
    b = result["7b"]
    assert [r["method"] for r in b["selectors"]] == ["cacovid", "cacovid-pool3-trained"]
    assert b["pooled_policy_terms"] == {"question_match_dim": 4, "context_width": 0, "novelty_weight": 1.0}
    assert b["shape"]["pooled_length"] == 62 + 2 * 4  # 4 x 4 frames → 2 x 2 cells of 3 x 3 (and less)
    assert b["selectors"][1]["gflops"] < b["selectors"][0]["gflops"]
    with pytest.raises(SystemExit, match="pool size 3"):
        mod.main(["--quick", "--parts", "7b", "--pooled-policy", str(folder), "--pool", "2"])
    CaCoVIDPolicy.from_host(llava_llm).save_pretrained(tmp_path / "plain")
    with pytest.raises(SystemExit, match="pool size 1"):
        mod.main(["--quick", "--parts", "7b", "--pooled-policy", str(tmp_path / "plain")])
    with pytest.raises(SystemExit, match="not a saved policy"):
        mod.main(["--quick", "--parts", "7b", "--pooled-policy", str(tmp_path / "missing")])


def test_quality_rows_pair_the_items():
    mod = _bench("overhead")

    def row(method, item, correct, recall):
        return {
            "method": method,
            "item_id": item,
            "ratio": 0.1,
            "correct": correct,
            "evidence_recall": recall,
        }

    rows = [row("cacovid", "a", 1, 0.5), row("cacovid", "b", 0, 0.25), row("cacovid", "c", 1, 1.0)]
    rows += [row("pooled", "a", 1, 0.25), row("pooled", "b", 1, 0.25), row("pooled", "c", 0, 0.5)]
    got = {r["method"]: r for r in mod.quality_rows(rows, "cacovid")}
    ref, pooled = got["cacovid"], got["pooled"]
    assert ref["n"] == pooled["n"] == 3 and ref["accuracy_diff"] is None
    assert ref["accuracy"] == pytest.approx(2 / 3) and pooled["accuracy"] == pytest.approx(2 / 3)
    assert ref["accuracy_se"] == pytest.approx((1 / 3) ** 0.5 / 3**0.5)
    assert pooled["accuracy_diff"] == pytest.approx(0.0)  # +1 and -1 and 0
    assert pooled["accuracy_diff_se"] == pytest.approx(1 / 3**0.5)  # std of (0, 1, -1) is 1
    assert pooled["recall_diff"] == pytest.approx((-0.25 + 0.0 - 0.5) / 3)
    assert mod.mean_se([]) == (None, None) and mod.mean_se([0.5]) == (0.5, None)


def test_overhead_quick_7b_and_full_model(capsys, tmp_path):
    from cacovid.evaluate.efficiency import layer_flops

    mod = _bench("overhead")
    path = tmp_path / "overhead.json"
    result = mod.main(["--quick", "--parts", "7b", "--full-model", "--json", str(path)])
    assert result["parts"] == ["7b", "full-model"]
    b, s = result["7b"], result["7b"]["shape"]
    assert (s["frames"], s["tokens_per_frame"], s["layers"]) == (2, 16, 28)
    assert s["length"] == 62 + 32 and s["kept_length"] == 62 + token_budget(32, 0.25)
    assert s["pooled_length"] == 62 + 2 * 4  # 4 x 4 frames → 2 x 2 cells
    names = ["cacovid", "cacovid-pool2"]
    assert [r["method"] for r in b["selectors"]] == names
    shipped = json.loads((BENCH.parent / "src/cacovid/policy/shipped/toy-decoys/config.json").read_text())
    assert b["policy_terms"] == {
        k: shipped[k] for k in ("question_match_dim", "context_width", "novelty_weight")
    }
    assert b["pooled_policy_terms"] == b["policy_terms"] and result["pooled_policy"] is None
    ours, pooled = b["selectors"]
    assert b["layer_full_ms"] > 0 and b["layer_kept_ms"] > 0
    assert b["prefill_full_ms_estimate"] == pytest.approx(28 * b["layer_full_ms"])
    # The policy is one bidirectional layer plus heads: more than one causal layer, far less than 28.
    one_layer = layer_flops(_bench("benchutil.shapes").text_config(quick=True), s["length"], causal=True)
    assert 100 * one_layer / (1e9 * b["prefill_full_gflops"]) < ours["pct_of_prefill_analytic"] < 50
    assert pooled["gflops"] < ours["gflops"] < b["prefill_full_gflops"]
    assert b["prefill_kept_gflops"] < b["prefill_full_gflops"]
    for r in (ours, pooled):
        assert r["select_ms"] > 0 and r["pct_of_prefill_measured"] > 0
        # Counting the selection can only lower the speed-up below dropping the tokens alone.
        assert 0 < r["speedup_with_selection_analytic"] < b["prefill_speedup_analytic"]
        assert r["speedup_with_selection_measured"] < b["prefill_speedup_measured"]
    assert b["above_threshold"] == (ours["pct_of_prefill_measured"] > 3.0)
    g = result["full_model"]
    assert g["layers"] == 28 and g["prefill_full_ms"] > 0 and g["prefill_kept_ms"] > 0
    assert [r["method"] for r in g["rows"]] == names
    for r in g["rows"]:
        assert r["compression_ms"] > 0 and 0 < r["speedup_with_compression"] < g["prefill_speedup"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == result["headline"] and lines[-1].startswith("headline: CaCoVID policy at 94 tokens")
    assert "paper 5.6 % and 3.1x" in lines[-1]
    assert json.loads(path.read_text())["headline"] == result["headline"]


def test_overhead_quick_toy_and_quality(capsys, tmp_path):
    mod = _bench("overhead")
    if not _bench("benchutil").toy_installed():
        pytest.skip("the shipped policies need the trained toy weights")
    result = mod.main(["--quick", "--parts", "toy,quality", "--work", str(tmp_path / "work")])
    t = result["toy"]
    baselines = [n for n in available_selectors() if n not in ("oracle", "fastv", "cacovid")]
    pooled = ["cacovid-pool2"]
    assert [r["method"] for r in t["rows"]] == ["full", "cacovid", *baselines, *pooled]
    assert t["failed"] == [] and t["full_prefill_ms"] > 0
    n_video = t["rows"][0]["kept"]
    for r in t["rows"][1:]:
        assert r["ratio"] == 0.25 and r["kept"] == token_budget(int(n_video), 0.25)
        assert r["select_ms"] > 0 and r["prefill_ms"] > 0 and r["select_pct_of_full_prefill"] > 0
        assert r["speedup_with_selection"] < r["prefill_speedup"]
    q = result["quality"]
    assert q["ratio"] == 0.1 and q["items"] == 4 and q["worlds"] == ["preset=decoys", "preset=classic"]
    got = [(r["world"], r["policy"], r["method"]) for r in q["rows"]]
    policies = {"preset=decoys": "toy-decoys", "preset=classic": "toy"}
    assert got == [(w, p, m) for w, p in policies.items() for m in ["cacovid", *pooled]]
    for r in q["rows"]:
        assert r["n"] == 4 and r["errors"] == 0
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["evidence_recall"] <= 1
        assert (r["accuracy_diff"] is None) == (r["method"] == "cacovid")
    lines = capsys.readouterr().out.strip().splitlines()
    assert "quality of pooled scoring" in "\n".join(lines)
    assert lines[-1] == result["headline"] and lines[-1].startswith("headline: toy CaCoVID selection")


def test_overhead_rejects_bad_options():
    mod = _bench("overhead")
    with pytest.raises(SystemExit, match="nosuch"):
        mod.main(["--quick", "--parts", "nosuch"])
    with pytest.raises(SystemExit, match="--pool"):
        mod.main(["--quick", "--parts", "7b", "--pool", "1"])
    with pytest.raises(SystemExit, match="names no preset"):
        mod.main(["--quick", "--parts", "toy", "--world", "frames=8"])
