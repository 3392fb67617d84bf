"""Tests for the evaluation harness, summaries, result files and efficiency accounting.

Models are tiny random LLaVA-OneVision instances (real transformers classes and processor) on a
small synthetic world (4 frames, 196 video tokens), so a whole run takes well under a second.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cacovid.evaluate import (
    EvalConfig,
    Harness,
    Method,
    build_methods,
    fastv_prefill_flops,
    layer_flops,
    measure_efficiency,
    parse_methods,
    prefill_flops,
    read_rows,
    run_evaluation,
    summarize,
    synthetic_source,
    videor1_source,
)
from cacovid.evaluate.records import decode_mask, encode_mask, repair_tail, row_key
from cacovid.evaluate.scoring import score_answer
from cacovid.selectors.base import BaseSelector
from cacovid.types import QAItem

torch.set_num_threads(1)

WORLD = "frames=4,target_frames=1:2"
TIMING = ("compression_ms",)


@pytest.fixture(scope="module")
def adapter():
    from cacovid.data.synthetic import VOCABULARY
    from cacovid.models import LlavaOneVisionVideoLLM
    from cacovid.testing.tiny import tiny_llava_onevision

    model, processor = tiny_llava_onevision(
        list(VOCABULARY), text_hidden=64, text_layers=2, vision_hidden=32, vision_layers=1, seed=3
    )
    return LlavaOneVisionVideoLLM(model, processor, name_or_path="tiny-llava")


def _source(n: int = 3):
    return synthetic_source(WORLD, "test", n)


def _without_timing(summary: dict) -> dict:
    out = json.loads(json.dumps(summary))
    for row in out["rows"]:
        for key in TIMING:
            row.pop(key, None)
    return out


# ---- hand-made rows ------------------------------------------------------------------------------
def _row(item, method, ratio, score, family, recall=None, kept=10, ms=1.0, **kw):
    row = {
        "item_id": item,
        "method": method,
        "ratio": ratio,
        "score": float(score),
        "correct": int(score),
        "family": family,
        "evidence_recall": recall,
        "kept_tokens": kept,
        "compression_ms": ms,
        "grid": [4, 7, 7],
        "error": None,
        "error_kind": None,
    }
    row.update(kw)
    return row


def test_summarize_hand_made_rows():
    rows = [
        _row("a", "full", 1.0, 1, "color", recall=1.0, kept=196, ms=0.0),
        _row("b", "full", 1.0, 1, "shape", recall=1.0, kept=196, ms=0.0),
        _row("c", "full", 1.0, 0, "color", recall=None, kept=196, ms=0.0),
        _row("d", "full", 1.0, 1, "shape", recall=1.0, kept=196, ms=0.0),
        _row("a", "uniform", 0.25, 1, "color", recall=0.5, kept=49, ms=1.0),
        _row("b", "uniform", 0.25, 0, "shape", recall=0.0, kept=49, ms=3.0),
        _row("c", "uniform", 0.25, 1, "color", recall=None, kept=49, ms=2.0),
        _row(
            "d", "uniform", 0.25, 0, "shape", recall=1.0, kept=49, ms=9.0, error="boom", error_kind="select"
        ),
        _row("a", "blind", 0.0, 0, "color", recall=0.0, kept=0, ms=0.0),
        _row("a", "fastv", 0.25, 1, "color", recall=0.0, kept=49, flop_equivalent_ratio=0.6),
    ]
    s = summarize(rows, {"model": "m", "dataset": "synthetic:test", "world": {"frames": 4}, "methods": []})
    assert s["model"] == "m" and s["dataset"] == "synthetic:test" and s["world"] == {"frames": 4}
    assert s["n_items"] == 4 and s["frames"] == 4 and s["tokens_per_frame"] == 49
    assert s["n_errors"] == 1
    by = {(r["method"], r["ratio"]): r for r in s["rows"]}
    assert [r["method"] for r in s["rows"]][:2] == ["full", "blind"]  # references first
    full, uni = by[("full", 1.0)], by[("uniform", 0.25)]
    assert full["accuracy"] == pytest.approx(0.75) and full["pct_of_full"] == pytest.approx(100.0)
    assert uni["n"] == 4 and uni["accuracy"] == pytest.approx(0.5)
    # uniform 2/4 correct vs full 3/4 on the same items
    assert uni["pct_of_full"] == pytest.approx(100 * 0.5 / 0.75)
    assert uni["per_family"] == {"color": 1.0, "shape": 0.0}
    assert full["per_family"] == {"color": 0.5, "shape": 1.0}
    assert uni["evidence_recall"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)  # item c has no evidence
    assert uni["kept_tokens_mean"] == 49 and uni["compression_ms"] == pytest.approx(2.5)
    assert uni["n_errors"] == 1
    # a partial row is compared with full on its own items only: item a, full 1.0 → 100 %
    assert by[("blind", 0.0)]["pct_of_full"] == pytest.approx(0.0)
    assert by[("fastv", 0.25)]["pct_of_full"] == pytest.approx(100.0)
    assert by[("fastv", 0.25)]["flop_equivalent_ratio"] == pytest.approx(0.6)
    assert "flop_equivalent_ratio" not in uni
    for r in s["rows"]:
        assert {
            "method",
            "ratio",
            "n",
            "accuracy",
            "pct_of_full",
            "evidence_recall",
            "kept_tokens_mean",
            "compression_ms",
            "per_family",
        } <= r.keys()


def test_summarize_later_row_wins_and_no_full():
    rows = [
        _row("a", "uniform", 0.1, 0, "color", error="x", error_kind="generate"),
        _row("a", "uniform", 0.1, 1, "color"),
    ]
    s = summarize(rows)
    assert len(s["rows"]) == 1 and s["rows"][0]["n"] == 1 and s["rows"][0]["accuracy"] == 1.0
    assert s["rows"][0]["pct_of_full"] is None and s["n_errors"] == 0
    assert s["rows"][0]["evidence_recall"] is None


def test_mask_encoding_round_trip():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 196, 785):
        mask = rng.random(n) < 0.3
        assert np.array_equal(decode_mask(encode_mask(mask), n), mask)
        assert np.array_equal(decode_mask(encode_mask(torch.from_numpy(mask)), n), mask)
    assert len(encode_mask(np.zeros(784, bool))) == 132


def test_repair_tail_drops_partial_line(tmp_path):
    p = tmp_path / "items.jsonl"
    p.write_text('{"item_id": "a", "method": "m", "ratio": 1}\n{"item_id": "b", "met')
    assert [r["item_id"] for r in read_rows(p)] == ["a"]
    assert repair_tail(p) > 0
    assert p.read_text() == '{"item_id": "a", "method": "m", "ratio": 1}\n'


def test_score_answer_kinds():
    mc = QAItem(id="q", problem="p", options=["red", "blue", "green"], solution="B")
    assert score_answer("B", mc).score == 1.0 and score_answer("B", mc).parsed == "B"
    assert score_answer("A .", mc).score == 0.0 and score_answer("A .", mc).parsed == "A"
    bad = score_answer("7 7 7", mc)
    assert bad.score == 0.0 and bad.parsed is None and "unparsable" in bad.error
    num = QAItem(id="n", problem="how many", options=[], solution="3", problem_type="numerical")
    assert score_answer("3", num).correct == 1 and score_answer("4", num).correct == 0


def test_parse_methods():
    assert parse_methods("random,uniform") == ["full", "blind", "oracle", "random", "uniform"]
    assert parse_methods("uniform", references=False) == ["uniform"]
    every = parse_methods("all")
    assert "fastv" in every and "visionzip" in every and "cacovid" not in every
    assert "cacovid" in parse_methods("all", policy=True)
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("nope")


# ---- end to end on a tiny model --------------------------------------------------------------------
@pytest.mark.float_paths
def test_end_to_end_tiny_llava(adapter, tmp_path):
    methods = build_methods(parse_methods("random,uniform,oracle"), adapter)
    summary = run_evaluation(adapter, _source(3), methods, tmp_path, EvalConfig(ratios=(0.25, 0.1)))
    rows = read_rows(tmp_path)
    # 3 items × (full + blind + 3 methods × 2 ratios)
    assert len(rows) == 3 * 8 and len({row_key(r) for r in rows}) == len(rows)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["n_items"] == 3 and summary["frames"] == 4 and summary["tokens_per_frame"] == 49
    assert summary["dataset"] == "synthetic:test" and summary["world"]["frames"] == 4
    assert summary["model"] == "tiny-llava" and summary["n_errors"] == 0
    for r in rows:
        assert r["error_kind"] in (None, "unparsable")
        keep = decode_mask(r["keep"], r["n_video_tokens"])
        assert keep.sum() == r["kept_tokens"] == {1.0: 196, 0.25: 49, 0.1: 19, 0.0: 0}[r["ratio"]]
        ev = decode_mask(r["evidence"], 196)
        assert r["evidence_recall"] == pytest.approx((keep & ev).sum() / ev.sum())
        assert isinstance(r["prediction"], str)
    oracle = [r for r in rows if r["method"] == "oracle"]
    assert all(r["evidence_recall"] == 1.0 for r in oracle)  # evidence is tiny: the oracle keeps it all
    assert {r["method"] for r in rows} == {"full", "blind", "oracle", "random", "uniform"}
    # The full row answers what the adapter answers on the unpruned prompt.
    item = next(iter(_source(1).items()))
    want = adapter.generate(adapter.encode_item(item), max_new_tokens=8)[0]
    got = next(r for r in rows if r["method"] == "full" and r["item_id"] == item.id)["prediction"]
    assert got == want


@pytest.mark.float_paths
def test_batching_items_gives_same_rows(adapter, tmp_path):
    methods = build_methods(parse_methods("random,uniform"), adapter)
    a = run_evaluation(adapter, _source(3), methods, tmp_path / "a", EvalConfig(ratios=(0.2,)))
    b = run_evaluation(adapter, _source(3), methods, tmp_path / "b", EvalConfig(ratios=(0.2,), batch_size=3))
    strip = ("compression_ms",)
    ra = [{k: v for k, v in r.items() if k not in strip} for r in read_rows(tmp_path / "a")]
    rb = [{k: v for k, v in r.items() if k not in strip} for r in read_rows(tmp_path / "b")]
    assert ra == rb and _without_timing(a) == _without_timing(b)


class _Stop(Exception):
    pass


def test_resume_computes_no_row_twice(adapter, tmp_path):
    methods = build_methods(parse_methods("random,uniform,oracle"), adapter)
    config = EvalConfig(ratios=(0.25, 0.1))
    seen = []

    def stop_after_two(event):
        seen.append(event.item_id)
        if len(seen) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        run_evaluation(adapter, _source(4), methods, tmp_path / "r", config, on_item=stop_after_two)
    partial = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert partial["n_items"] == 2 and len(read_rows(tmp_path / "r")) == 16

    encoded = []
    original = adapter.encode_item

    def counting(item, **kw):
        encoded.append(item.id)
        return original(item, **kw)

    adapter.encode_item = counting
    try:
        harness = Harness(adapter, _source(4), methods, tmp_path / "r", config)
        resumed = harness.run_all()
    finally:
        del adapter.encode_item
    assert encoded == ["synthetic:test:2", "synthetic:test:3"]  # finished items are not even encoded
    assert harness.n_computed == 16
    rows = read_rows(tmp_path / "r")
    assert len(rows) == 32 and len({row_key(r) for r in rows}) == 32

    fresh = run_evaluation(adapter, _source(4), methods, tmp_path / "fresh", config)
    assert _without_timing(resumed) == _without_timing(fresh)
    again = Harness(adapter, _source(4), methods, tmp_path / "r", config)
    assert _without_timing(again.run_all()) == _without_timing(fresh) and again.n_computed == 0


def test_resume_refuses_a_different_run(adapter, tmp_path):
    methods = build_methods(["full"], adapter)
    run_evaluation(adapter, _source(1), methods, tmp_path, EvalConfig(ratios=(0.5,)))
    with pytest.raises(ValueError, match="different run"):
        run_evaluation(adapter, _source(1), methods, tmp_path, EvalConfig(ratios=(0.5,), seed=1))


class _FailsOnOne(BaseSelector):
    """Keeps the first k tokens, but raises on one item: a selector bug on one input."""

    name = "flaky"

    def __init__(self, bad_item: str) -> None:
        self.bad_item = bad_item

    def _select(self, prompt, k, generator):
        if prompt.meta.get("item_id") == self.bad_item:
            raise RuntimeError("cannot handle this video")
        keep = torch.zeros(prompt.num_video_tokens, dtype=torch.bool)
        keep[:k] = True
        return keep, None, {}


def test_selector_error_is_recorded_and_run_continues(adapter, tmp_path):
    methods = [*build_methods(["full"], adapter), Method("flaky", _FailsOnOne("synthetic:test:1"))]
    summary = run_evaluation(adapter, _source(3), methods, tmp_path, EvalConfig(ratios=(0.25,)))
    rows = read_rows(tmp_path)
    assert len(rows) == 6
    bad = [r for r in rows if r["error_kind"] == "select"]
    assert len(bad) == 1 and bad[0]["item_id"] == "synthetic:test:1" and "cannot handle" in bad[0]["error"]
    assert bad[0]["correct"] == 0 and bad[0]["prediction"] is None
    flaky = next(r for r in summary["rows"] if r["method"] == "flaky")
    assert flaky["n"] == 3 and flaky["n_errors"] == 1 and summary["n_errors"] == 1
    # the other items of the flaky method were answered
    assert sum(1 for r in rows if r["method"] == "flaky" and r["prediction"] is not None) == 2
    # retry_errors recomputes just that row (and it fails again, deterministically)
    h = Harness(adapter, _source(3), methods, tmp_path, EvalConfig(ratios=(0.25,), retry_errors=True))
    h.run_all()
    assert h.n_computed == 1


def test_unreadable_video_is_recorded(adapter, tmp_path):
    from cacovid.data.synthetic import SyntheticWorld, WorldConfig, export_videor1

    world = SyntheticWorld(WorldConfig().with_overrides(WORLD))
    path = export_videor1(world, "test", 2, tmp_path / "data")
    entries = json.loads(path.read_text())
    (path.parent / entries[0]["path"]).write_bytes(b"not a video at all")
    methods = build_methods(parse_methods("uniform"), adapter)
    summary = run_evaluation(
        adapter, videor1_source(path), methods, tmp_path / "out", EvalConfig(ratios=(0.5,))
    )
    rows = read_rows(tmp_path / "out")
    first = [r for r in rows if r["item_id"] == entries[0]["id"]]
    second = [r for r in rows if r["item_id"] == entries[1]["id"]]
    assert first and all(r["error_kind"] == "encode" for r in first)
    assert len(second) == 4 and all(r["error_kind"] in (None, "unparsable") for r in second)
    assert summary["dataset"].startswith("videor1:") and summary["n_errors"] == len(first)
    # evidence came with the JSON, so the oracle ran on the readable item
    assert any(r["method"] == "oracle" and r["evidence_recall"] == 1.0 for r in second)


def test_fastv_and_vision_attention_methods(adapter, tmp_path):
    methods = build_methods(parse_methods("fastv,visionzip", references=False), adapter)
    fastv = methods[0]
    assert fastv.fastv_layer == 1  # clipped to the tiny model's 2 layers
    summary = run_evaluation(adapter, _source(2), methods, tmp_path, EvalConfig(ratios=(0.25,)))
    by = {r["method"]: r for r in summary["rows"]}
    assert by["fastv"]["flop_equivalent_ratio"] > 0.25 and summary["n_errors"] == 0
    assert "flop_equivalent_ratio" not in by["visionzip"]


# ---- efficiency ----------------------------------------------------------------------------------
def test_prefill_flops_hand_checked():
    cfg = {
        "num_hidden_layers": 3,
        "hidden_size": 8,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 4,
        "intermediate_size": 16,
        "vocab_size": 10,
    }
    # per layer, n = 5: q,o 2·5·8·8 each, k,v 2·5·8·4 each → 1920; QKᵀ and AV 2·25·8 each → 800;
    # gate, up, down 2·5·8·16 each → 3840.  Three layers + LM head 2·8·10 on one token.
    assert layer_flops(cfg, 5) == 1920 + 800 + 3840
    assert prefill_flops(cfg, 5) == 3 * 6560 + 160
    assert layer_flops(cfg, 5, causal=True) == 1920 + 4 * 15 * 8 + 3840
    assert fastv_prefill_flops(cfg, 5, 2, layer=1) == layer_flops(cfg, 5) + 2 * layer_flops(cfg, 2) + 160


def test_prefill_flops_match_the_model_weights(adapter):
    # The linear part must equal 2·n·(weights of the decoder's matrices) of the real model.
    lm = adapter.language_model()
    matrix_params = sum(p.numel() for p in lm.layers.parameters() if p.dim() == 2)
    cfg = adapter.text_config
    n = 37
    attn = cfg.num_hidden_layers * 4 * n * n * cfg.hidden_size  # QKᵀ + AV, H·hd = hidden here
    head = 2 * cfg.hidden_size * cfg.vocab_size
    assert prefill_flops(cfg, n) == 2 * n * matrix_params + attn + head


def test_measure_efficiency_tiny(adapter, tmp_path):
    methods = build_methods(parse_methods("uniform,fastv"), adapter)
    items = list(_source(1).items())
    eff = measure_efficiency(adapter, items, methods, (0.25,), repeats=1, warmup=0, out=tmp_path)
    assert json.loads((tmp_path / "efficiency.json").read_text()) == eff
    assert eff["failed"] == [] and eff["device"] == "cpu" and eff["memory_kind"] == "cpu_rss_sampled"
    by = {(r["method"], r["ratio"]): r for r in eff["rows"]}
    full, uni, fastv = by[("full", 1.0)], by[("uniform", 0.25)], by[("fastv", 0.25)]
    assert eff["rows"][0]["method"] == "full" and full["prefill_speedup"] == 1.0
    n_text = full["seq_len"] - 196
    assert uni["kept_tokens"] == 49 and uni["seq_len"] == n_text + 49
    assert uni["flops_fraction"] == pytest.approx(
        prefill_flops(adapter.text_config, n_text + 49) / full["prefill_flops"]
    )
    assert uni["flops_fraction"] < fastv["flops_fraction"] < 1.0  # FastV pays for its full-length layer
    for r in eff["rows"]:
        for key in ("compression_ms", "encode_ms", "vision_encoder_ms", "prefill_ms", "ttft_ms"):
            assert r[key] is not None and r[key] >= 0 and math.isfinite(r[key])
        assert r["ttft_ms"] >= r["prefill_ms"] and r["encode_ms"] >= r["vision_encoder_ms"]
        assert r["peak_memory_mb"] > 0
    assert "blind" in {r["method"] for r in eff["rows"]} and by[("blind", 0.0)]["kept_tokens"] == 0


# ---- CLI -----------------------------------------------------------------------------------------
def test_cli_eval_and_report(adapter, tmp_path):
    from typer.testing import CliRunner

    from cacovid.cli.eval import app

    model_dir = tmp_path / "model"
    adapter.model.save_pretrained(model_dir)
    adapter.processor.save_pretrained(model_dir)
    out = tmp_path / "res"
    args = ["eval", "--model", str(model_dir), "--world", WORLD, "--methods", "uniform", "--ratios", "0.25"]
    args += ["--n", "2", "--out", str(out), "--repeats", "1", "--efficiency-items", "1", "--no-report"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_items"] == 2 and {r["method"] for r in summary["rows"]} == {
        "full",
        "blind",
        "oracle",
        "uniform",
    }
    assert (out / "efficiency.json").is_file() and "uniform" in result.output
    result = CliRunner().invoke(app, ["report", str(out), "--n-items", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and (out / "accuracy_vs_retention.png").is_file()
    bad = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "--ratios", "25", "--out", str(out)])
    assert bad.exit_code != 0 and "ratios" in bad.output


def test_selection_options_travel_with_the_policy(llava_llm, tmp_path):
    import json

    from cacovid.evaluate import build_methods
    from cacovid.policy import CaCoVIDPolicy

    CaCoVIDPolicy.from_host(llava_llm, seed=0).save_pretrained(tmp_path)
    (method,) = build_methods(["cacovid"], llava_llm, policy=str(tmp_path))
    assert (method.selector.alpha, method.selector.fill) == (0.5, "even")  # method.md defaults
    (tmp_path / "selection.json").write_text(json.dumps({"alpha": 0.7, "fill": "score", "note": "val"}))
    (method,) = build_methods(["cacovid"], llava_llm, policy=str(tmp_path))
    assert (method.selector.alpha, method.selector.fill) == (0.7, "score")
    (tmp_path / "selection.json").write_text(json.dumps({"alhpa": 0.7}))
    with pytest.raises(ValueError, match="alhpa"):
        build_methods(["cacovid"], llava_llm, policy=str(tmp_path))


def test_question_sensitivity_of_blind_selectors_is_their_base_rate(adapter, tmp_path):
    """On items with a counterfactual question, a selector that ignores the question keeps the same
    tokens when asked about the other object (sensitivity = base rate, Jaccard 1); one that reads
    the question (`relevance`) moves its selection."""
    source = synthetic_source("preset=decoys,frames=4,target_frames=2:3", "test", 4)
    methods = build_methods(
        parse_methods("random,uniform,novelty,relevance", references=True), adapter, seed=1
    )
    summary = run_evaluation(adapter, source, methods, tmp_path, EvalConfig(ratios=(0.25, 0.1)))
    rows = read_rows(tmp_path / "items.jsonl")
    for row in rows:
        if row["method"] in ("full", "blind"):
            assert row["question_sensitivity"] is None
            continue
        assert 0.0 <= row["question_sensitivity"] <= 1.0
        if row["method"] in ("random", "uniform", "novelty"):
            assert row["question_sensitivity"] == row["question_base_rate"]
            assert row["question_jaccard"] == 1.0
        if row["method"] == "oracle":  # ground truth follows the question: all of the other object
            assert row["question_sensitivity"] == 1.0
    relevance = [r for r in rows if r["method"] == "relevance"]
    assert min(r["question_jaccard"] for r in relevance) < 1.0
    by_key = {(r["method"], r["ratio"]): r for r in summary["rows"]}
    random_row = by_key[("random", 0.1)]
    assert random_row["question_sensitivity"] == pytest.approx(random_row["question_base_rate"])
    assert by_key[("full", 1.0)]["question_sensitivity"] is None


def test_question_sensitivity_lends_the_counterfactual_the_items_video_features(
    adapter, tmp_path, monkeypatch
):
    """The counterfactual question shows the item's video: it is encoded with the item's features
    (one vision-tower pass per item, not two), and every figure is the one a full encoding gives."""
    from cacovid.types import QAItem

    source = synthetic_source("preset=decoys,frames=4,target_frames=2:3", "test", 3)
    methods = build_methods(parse_methods("relevance", references=False), adapter, seed=1)
    tower = adapter._video_features
    calls = []
    monkeypatch.setattr(adapter, "_video_features", lambda *a, **k: calls.append(1) or tower(*a, **k))
    run_evaluation(adapter, source, methods, tmp_path / "lent", EvalConfig(ratios=(0.25, 0.1)))
    assert len(calls) == 3
    monkeypatch.setattr(QAItem, "shows_same_video", lambda self, other: False)
    run_evaluation(adapter, source, methods, tmp_path / "full", EvalConfig(ratios=(0.25, 0.1)))
    assert len(calls) == 3 + 6
    keys = ("question_sensitivity", "question_base_rate", "question_jaccard", "keep", "prediction")
    lent, full = (read_rows(tmp_path / d / "items.jsonl") for d in ("lent", "full"))
    assert [{k: r[k] for k in keys} for r in lent] == [{k: r[k] for k in keys} for r in full]
    assert all(r["question_sensitivity"] is not None for r in lent)


def test_question_sensitivity_is_null_without_counterfactuals(adapter, tmp_path):
    methods = build_methods(parse_methods("random", references=False), adapter)
    summary = run_evaluation(adapter, _source(2), methods, tmp_path, EvalConfig(ratios=(0.25,)))
    (row,) = summary["rows"]
    assert row["question_sensitivity"] is None and row["question_jaccard"] is None
