"""Tests of bench/overhead.py and its prototype pooled policy (bench/benchutil/pooled_policy.py): the
pooled prompt is the cell means at the right places, pooling by 1 reproduces the policy exactly, and
the benchmark's quick run gives every row it should with sane relations (never a wall-clock
threshold)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from cacovid.policy import CaCoVIDPolicy, CaCoVIDSelector
from cacovid.selectors.registry import available_selectors
from cacovid.types import EncodedPrompt, token_budget

BENCH = Path(__file__).resolve().parents[1] / "bench"
WORLD = "frames=6"


def _bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import their shared helper `benchutil`
    return importlib.import_module(name)


def _prompt(T: int = 2, H: int = 3, W: int = 3, D: int = 4, mrope: bool = False) -> EncodedPrompt:
    prefix, suffix = 2, 3
    L = prefix + T * H * W + suffix
    embeds = torch.arange(L * D, dtype=torch.float32).reshape(L, D)
    pos = torch.arange(L) * 10
    return EncodedPrompt(
        inputs_embeds=embeds,
        position_ids=torch.stack([pos, pos + 1, pos + 2]) if mrope else pos,
        attention_mask=torch.ones(L, dtype=torch.long),
        video_positions=torch.arange(prefix, prefix + T * H * W),
        video_grid=(T, H, W),
        input_ids=torch.arange(L),
    )


@pytest.mark.parametrize("mrope", [False, True])
def test_pool_prompt_is_the_cell_means_at_the_first_members_place(mrope):
    mod = _bench("benchutil.pooled_policy")
    prompt = _prompt(mrope=mrope)
    pooled, members = mod.pool_prompt(prompt, 2)
    assert pooled.video_grid == (2, 2, 2)  # 3 x 3 frames: cells of 4, 2, 2 and 1 tokens
    assert pooled.inputs_embeds.shape == (2 + 8 + 3, 4)
    # Frame 0, grid (h, w) → sequence position 2 + 3h + w; its cells and their first members:
    assert members.tolist()[:9] == [0, 0, 1, 0, 0, 1, 2, 2, 3]
    assert members.tolist()[9:] == [m + 4 for m in members.tolist()[:9]]
    video = prompt.inputs_embeds[prompt.video_positions]
    for cell in range(8):
        want = video[members == cell].mean(dim=0)
        assert torch.equal(pooled.inputs_embeds[pooled.video_positions[cell]], want)
    firsts = [0, 2, 6, 8, 9, 11, 15, 17]  # index of each cell's first member among the video tokens
    original = prompt.position_ids[..., prompt.video_positions[firsts]]
    assert torch.equal(pooled.position_ids[..., pooled.video_positions], original)
    assert pooled.video_positions.tolist() == list(range(2, 10))
    text = torch.cat([torch.arange(2), torch.arange(20, 23)])
    assert torch.equal(pooled.inputs_embeds[[0, 1, 10, 11, 12]], prompt.inputs_embeds[text])
    assert torch.equal(pooled.input_ids[[0, 1, 10, 11, 12]], text)
    same, ident = mod.pool_prompt(prompt, 1)
    assert torch.equal(same.inputs_embeds, prompt.inputs_embeds) and torch.equal(ident, torch.arange(18))
    with pytest.raises(ValueError, match="pool size"):
        mod.cell_index(3, 3, 0)


@pytest.mark.parametrize("host", ["llava_llm", "qwen2_vl_llm"])
def test_pooled_selector_by_one_is_the_policy_and_by_two_broadcasts(request, host):
    mod = _bench("benchutil.pooled_policy")
    adapter = request.getfixturevalue(host)
    item = _bench("benchutil").synthetic_items(1, WORLD)[0]
    prompt = adapter.encode_item(item)
    policy = CaCoVIDPolicy.from_host(adapter, init_scale=1.0, question_match_dim=8, context_width=4)
    with torch.no_grad():  # fresh terms start at zero: give them weight so they change the scores
        policy.question_match.key.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
        policy.context.out.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2))
    base = CaCoVIDSelector(policy, alpha=0.75, fill="score")
    want = base.select(prompt, 0.25).keep
    for terms in (False, True):
        same = mod.PooledCaCoVIDSelector(base, 1, full_resolution_terms=terms)
        assert torch.equal(same.select(prompt, 0.25).keep, want)
    pooled = mod.PooledCaCoVIDSelector(base, 2)
    assert pooled.name == "cacovid-pool2"
    scores, frames = pooled.scores(prompt)
    _, members = mod.pool_prompt(prompt, 2)
    assert scores.shape == (prompt.num_video_tokens,) and frames.shape == (prompt.num_frames,)
    for cell in members.unique()[:10]:
        assert scores[members == cell].unique().numel() == 1  # one score per cell
    fine, _ = mod.PooledCaCoVIDSelector(base, 2, full_resolution_terms=True).scores(prompt)
    assert not torch.equal(fine, scores)  # the full-grid terms tell the members apart
    sel = pooled.select(prompt, 0.1)
    assert int(sel.keep.sum()) == token_budget(prompt.num_video_tokens, 0.1) and sel.compression_ms > 0
    with pytest.raises(ValueError, match="pool size"):
        mod.PooledCaCoVIDSelector(base, 0)
    with pytest.raises(ValueError, match="CaCoVIDSelector"):
        mod.PooledCaCoVIDSelector(policy, 2)


def test_quality_rows_pair_the_items():
    mod = _bench("benchutil.pooled_policy")

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
    names = ["cacovid", "cacovid-pool2", "cacovid-pool2+terms"]  # the decoys policy has per-token terms
    assert [r["method"] for r in b["selectors"]] == names
    shipped = json.loads((BENCH.parent / "src/cacovid/policy/shipped/toy-decoys/config.json").read_text())
    assert b["policy_terms"] == {
        k: shipped[k] for k in ("question_match_dim", "context_width", "novelty_weight")
    }
    ours, pooled, fine = b["selectors"]
    assert b["layer_full_ms"] > 0 and b["layer_kept_ms"] > 0
    assert b["prefill_full_ms_estimate"] == pytest.approx(28 * b["layer_full_ms"])
    # The policy is one bidirectional layer plus heads: more than one causal layer, far less than 28.
    one_layer = layer_flops(_bench("benchutil.shapes").text_config(quick=True), s["length"], causal=True)
    assert 100 * one_layer / (1e9 * b["prefill_full_gflops"]) < ours["pct_of_prefill_analytic"] < 50
    assert pooled["gflops"] < fine["gflops"] < ours["gflops"] < b["prefill_full_gflops"]
    assert b["prefill_kept_gflops"] < b["prefill_full_gflops"]
    for r in (ours, pooled, fine):
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
    pooled = ["cacovid-pool2", "cacovid-pool2+terms"]
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
