"""The training loop: batched reward calls, logs, validation, blind filter, exact resume, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cacovid.data.synthetic import SyntheticWorld, WorldConfig
from cacovid.policy import CaCoVIDPolicy
from cacovid.train.config import TrainConfig
from cacovid.train.sampling import mode_counts
from cacovid.train.schedule import cosine_with_warmup, make_optimizer, make_scheduler
from cacovid.train.trainer import Trainer
from cacovid.train.update import PolicyUpdater
from cacovid.train.validation import blind_answers_correct, blind_filter
from cacovid.types import QAItem


@pytest.fixture(autouse=True)
def _one_thread():
    """Many tiny ops: one thread is several times faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world_items():
    world = SyntheticWorld(WorldConfig(frames=4, target_frames=(1, 2)))
    return list(world.items("train", 5)), list(world.items("val", 2))


def _config(**kw) -> TrainConfig:
    base = dict(
        group_size=6,
        iterations=2,
        reward="dense",
        blind_filter=False,
        lr=1e-2,
        warmup_fraction=0.0,
        checkpoint_every=1,
        val_every=100,
        val_ratios=(0.5,),
        seed=3,
    )
    return TrainConfig.paper(**(base | kw))


def _trainer(llm, items, vals, out, **kw) -> Trainer:
    cfg = kw.pop("config", None) or _config(**kw.pop("cfg", {}))
    policy = CaCoVIDPolicy.from_host(llm, seed=1)
    return Trainer(llm, policy, cfg, items, vals, out, progress=False, **kw)


def _events(path, kind):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == kind]


def test_one_batched_reward_call_per_iteration(llava_llm, world_items, tmp_path):
    items, vals = world_items
    calls = []
    real = llava_llm.answer_logprobs_rows

    def counting(rows, answers):
        calls.append(len(rows))
        return real(rows, answers)

    llava_llm.answer_logprobs_rows = counting
    try:
        tr = _trainer(llava_llm, items[:2], vals, tmp_path)
        summary = tr.fit()
    finally:
        del llava_llm.answer_logprobs_rows
    assert calls == [6] * (2 * 2)  # G rows in one call, I iterations per item, 2 items
    assert summary["finished"] and summary["steps"] == 4 and summary["items_done"] == 2
    items_logged = _events(tmp_path / "log.jsonl", "item")
    assert [r["item_id"] for r in items_logged] == [items[0].id, items[1].id]
    for r in items_logged:
        assert {
            "reward",
            "reward_token",
            "reward_frame",
            "reward_content",
            "reward_top",
            "ratio",
            "loss",
            "lr",
        } <= set(r)
        assert 0.0 <= r["reward"] <= 1.0
    val = _events(tmp_path / "log.jsonl", "val")
    assert [v["ratio"] for v in val] == [0.5] and val[0]["n"] == 2 and 0 <= val[0]["accuracy"] <= 1
    assert "evidence_recall" in val[0]
    assert summary["validation"][0]["ratio"] == 0.5
    # the final policy is a loadable, host-checked policy
    loaded = CaCoVIDPolicy.from_pretrained(tmp_path / "policy", host=llava_llm)
    for k, v in tr.policy.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_resume_after_a_crash_equals_training_straight(llava_llm, world_items, tmp_path):
    items, vals = world_items
    straight = _trainer(llava_llm, items, vals, tmp_path / "a", cfg=dict(checkpoint_every=2, val_every=2))
    straight.fit()
    # "crash": run 3 items; the checkpoint is at item 2, item 3 is logged but lost.
    crashed = _trainer(llava_llm, items, vals, tmp_path / "b", cfg=dict(checkpoint_every=2, val_every=2))
    crashed.fit(max_items=3)
    assert len(_events(tmp_path / "b" / "log.jsonl", "item")) == 3
    resumed = _trainer(llava_llm, items, vals, tmp_path / "b", cfg=dict(checkpoint_every=2, val_every=2))
    summary = resumed.fit()
    assert summary["finished"] and summary["items_done"] == len(items)
    a, b = straight.policy.state_dict(), resumed.policy.state_dict()
    moved = max(
        float((a[k] - CaCoVIDPolicy.from_host(llava_llm, seed=1).state_dict()[k]).abs().max()) for k in a
    )
    assert moved > 1e-4  # training really changed the weights, so equality below means something
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert straight.updater.ratio == resumed.updater.ratio
    assert straight.updater.step == resumed.updater.step
    # the resumed log holds each item exactly once, with the same numbers as the straight run
    la = _events(tmp_path / "a" / "log.jsonl", "item")
    lb = _events(tmp_path / "b" / "log.jsonl", "item")
    assert [r["item_id"] for r in lb] == [r["item_id"] for r in la]
    for ra, rb in zip(la, lb, strict=True):
        assert math.isclose(ra["loss"], rb["loss"], rel_tol=1e-5, abs_tol=1e-7)
        assert ra["reward"] == pytest.approx(rb["reward"], abs=1e-6)
    va = [(r["items_done"], r["accuracy"]) for r in _events(tmp_path / "a" / "log.jsonl", "val")]
    vb = [(r["items_done"], r["accuracy"]) for r in _events(tmp_path / "b" / "log.jsonl", "val")]
    assert va == vb
    fa = load_file(str(tmp_path / "a" / "policy" / "model.safetensors"))
    fb = load_file(str(tmp_path / "b" / "policy" / "model.safetensors"))
    assert all(torch.allclose(fa[k], fb[k], atol=1e-6) for k in fa)


def test_resume_refuses_a_changed_config(llava_llm, world_items, tmp_path):
    items, vals = world_items
    _trainer(llava_llm, items[:2], [], tmp_path).fit(max_items=1)
    with pytest.raises(ValueError, match="lr"):
        _trainer(llava_llm, items[:2], [], tmp_path, cfg=dict(lr=5e-3)).fit()
    with pytest.raises(ValueError, match="training items"):
        _trainer(llava_llm, items[:3], [], tmp_path).fit()
    primed = CaCoVIDPolicy.from_host(llava_llm, seed=1, novelty_weight=2.0)  # same weights, another prior
    with pytest.raises(ValueError, match="novelty_weight 0, the given policy 2"):
        Trainer(llava_llm, primed, _config(), items[:2], [], tmp_path, progress=False).fit()
    # --no-resume starts afresh and overwrites
    tr = _trainer(llava_llm, items[:2], [], tmp_path, cfg=dict(lr=5e-3), resume=False)
    assert tr.fit()["finished"]


def test_blind_filter_drops_items_answered_without_video(llava_llm):
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)
    probe = QAItem(
        id="p", problem="what color ?", options=[], solution="x", problem_type="free-form", frames=frames
    )
    p = llava_llm.encode_item(probe)
    blind_text = llava_llm.generate_rows([(p, torch.zeros(p.num_video_tokens, dtype=torch.bool), None)])[0]
    assert blind_text  # the tiny model says something
    easy = QAItem(
        id="easy",
        problem="what color ?",
        options=[],
        solution=blind_text,
        problem_type="free-form",
        frames=frames,
    )
    hard = QAItem(
        id="hard",
        problem="what color ?",
        options=[],
        solution="zebra crossing",
        problem_type="free-form",
        frames=frames,
    )
    assert blind_answers_correct(llava_llm, [easy, hard, easy], batch_size=2) == [True, False, True]
    assert blind_filter(llava_llm, [easy, hard, easy]) == [1]


def test_trainer_applies_the_blind_filter(llava_llm, world_items, tmp_path):
    items, _ = world_items
    probe = dataclasses.replace(items[1], problem_type="free-form", solution="?")
    p = llava_llm.encode_item(probe)
    said = llava_llm.generate_rows([(p, torch.zeros(p.num_video_tokens, dtype=torch.bool), None)])[0]
    easy = dataclasses.replace(probe, id="easy", solution=said)  # answered right without the video
    train = [items[0], easy, items[2]]
    assert blind_answers_correct(llava_llm, train) == [False, True, False]
    tr = _trainer(llava_llm, train, [], tmp_path, cfg=dict(blind_filter=True, iterations=1))
    summary = tr.fit()
    assert summary["train_items"] == 2
    assert [r["item_id"] for r in _events(tmp_path / "log.jsonl", "item")] == [items[0].id, items[2].id]
    filt = _events(tmp_path / "log.jsonl", "filter")[0]
    assert (filt["n"], filt["kept"], filt["dropped"]) == (3, 2, 1)
    only_easy = _trainer(llava_llm, [easy], [], tmp_path / "e", cfg=dict(blind_filter=True))
    with pytest.raises(ValueError, match="blind test"):
        only_easy.fit()


def test_adaptive_ratio_halves_doubles_and_stays_in_bounds(llava_llm):
    policy = CaCoVIDPolicy.from_host(llava_llm)
    up = PolicyUpdater(policy, TrainConfig.paper(ratio=0.02, ratio_min=0.01, ratio_max=0.12), total_steps=10)
    up.adapt_ratio(0.9)
    assert up.ratio == 0.01
    up.adapt_ratio(1.0)
    assert up.ratio == 0.01  # floor
    up.adapt_ratio(0.5)
    assert up.ratio == 0.01  # informative: unchanged
    for want in (0.02, 0.04, 0.08, 0.12, 0.12):
        up.adapt_ratio(0.1)
        assert up.ratio == pytest.approx(want)
    fixed = PolicyUpdater(policy, TrainConfig.paper(adapt_ratio=False), total_steps=10)
    fixed.adapt_ratio(1.0)
    assert fixed.ratio == 0.02


def test_schedule_counts_optimiser_steps(llava_llm):
    assert cosine_with_warmup(0, 100, 10) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 100, 10) == pytest.approx(1.0)
    assert cosine_with_warmup(10, 100, 10) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 100, 10) == pytest.approx(0.5)
    assert cosine_with_warmup(100, 100, 10, min_scale=0.1) == pytest.approx(0.1)
    policy = CaCoVIDPolicy.from_host(llava_llm)
    opt = make_optimizer(policy, lr=1e-3, layer_lr_scale=0.1)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, pytest.approx(1e-4)]
    n_heads = sum(p.numel() for p in policy.head_parameters())
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == n_heads
    sched = make_scheduler(opt, total_steps=20, warmup_fraction=0.0, min_scale=0.0)
    for _ in range(20):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_stop_at_checkpoints_there_and_a_later_call_continues(llava_llm, world_items, tmp_path):
    items, _ = world_items
    cfg = dict(checkpoint_every=50)  # no regular checkpoint before the stop
    first = _trainer(llava_llm, items[:3], [], tmp_path, cfg=cfg).fit(stop_at=2)
    assert not first["finished"] and first["items_done"] == 2
    assert (tmp_path / "checkpoint" / "policy" / "model.safetensors").is_file()
    assert not (tmp_path / "policy").exists()
    rest = _trainer(llava_llm, items[:3], [], tmp_path, cfg=cfg).fit(stop_at=10)
    assert rest["finished"] and rest["items_done"] == 3
    assert len(_events(tmp_path / "log.jsonl", "item")) == 3


def test_resume_accepts_retired_options_only_at_the_value_training_still_computes(
    llava_llm, world_items, tmp_path
):
    items, _ = world_items
    _trainer(llava_llm, items[:2], [], tmp_path).fit(max_items=1)
    saved = tmp_path / "checkpoint" / "train_config.json"
    recorded = json.loads(saved.read_text())
    saved.write_text(json.dumps({**recorded, "token_scope": "frame", "frame_token_credit": False}))
    assert _trainer(llava_llm, items[:2], [], tmp_path).fit(max_items=0)["items_done"] == 1
    saved.write_text(json.dumps({**recorded, "token_objective": "contribution"}))
    with pytest.raises(ValueError, match="token_objective='contribution'"):
        _trainer(llava_llm, items[:2], [], tmp_path).fit()


def test_config_validation():
    with pytest.raises(ValueError, match="ratio"):
        TrainConfig.paper(ratio=0.5, ratio_max=0.12)
    with pytest.raises(ValueError, match="group_size"):
        TrainConfig.paper(group_size=0)
    with pytest.raises(ValueError, match="val_ratios"):
        TrainConfig.paper(val_ratios=(0.0,))
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"nope": 1})
    cfg = TrainConfig.paper(val_ratios=[0.3])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_trainer_rejects_bad_validation_selection(llava_llm, world_items, tmp_path):
    items, vals = world_items
    with pytest.raises(ValueError, match="alpha"):
        _trainer(llava_llm, items, vals, tmp_path, val_selection={"alpha": 2.0})
    with pytest.raises(ValueError, match="unknown validation selection"):
        _trainer(llava_llm, items, vals, tmp_path, val_selection={"beta": 1.0})


def test_cli_trains_and_resumes(tmp_path):
    from typer.testing import CliRunner

    from cacovid.cli.train import app
    from cacovid.testing.tiny import tiny_llava_onevision

    model, proc = tiny_llava_onevision(
        text_hidden=32, text_layers=1, heads=4, kv_heads=2, vision_hidden=32, vision_layers=1
    )
    model.save_pretrained(tmp_path / "model")
    proc.save_pretrained(tmp_path / "model")
    out = tmp_path / "run"
    args = [
        "--preset",
        "paper",
        "--model",
        str(tmp_path / "model"),
        "--data",
        "synthetic",
        "--world",
        "frames=4,target_frames=1:2",
        "--n-items",
        "2",
        "--val-items",
        "2",
        "--group-size",
        "4",
        "--iterations",
        "1",
        "--no-blind-filter",
        "--out",
        str(out),
        "--no-progress",
        "--val-ratios",
        "0.5,0.25",
        "--reward",
        "dense",
        "--frame-share",
        "0.5",
        "--kl-coef",
        "0.1",
        "--checkpoint-every",
        "1",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "policy" / "model.safetensors").is_file()
    recorded = json.loads((out / "train_config.json").read_text())
    assert (recorded["frame_share"], recorded["kl_coef"]) == (0.5, 0.1)
    assert json.loads((out / "world.json").read_text())["frames"] == 4
    val = _events(out / "log.jsonl", "val")
    assert sorted(v["ratio"] for v in val) == [0.25, 0.5]
    assert all(v["selection"] == {} for v in val)  # no --init-policy: docs/method.md §3's defaults
    # Continuing from a policy validates with the selection it ships with (its selection.json).
    assert not (out / "policy" / "selection.json").exists()
    (out / "policy" / "selection.json").write_text(json.dumps({"alpha": 0.0, "fill": "score", "note": "x"}))
    more = [*args[: args.index("--out")], "--out", str(tmp_path / "more"), *args[args.index("--out") + 2 :]]
    res = CliRunner().invoke(app, [*more, "--init-policy", str(out / "policy")])
    assert res.exit_code == 0, res.output
    val = _events(tmp_path / "more" / "log.jsonl", "val")
    assert val and all(v["selection"] == {"alpha": 0.0, "fill": "score"} for v in val)
    # ... and the policy it saves carries that selection; without one, none is written.
    saved = json.loads((tmp_path / "more" / "policy" / "selection.json").read_text())
    assert (saved["alpha"], saved["fill"]) == (0.0, "score") and "inherited" in saved["note"]
    assert json.loads((out / "policy" / "config.json").read_text())["novelty_weight"] == 0.0
    # --novelty-weight primes a policy (here one continued from a saved, unprimed one) ...
    primed = [
        *args[: args.index("--out")],
        "--out",
        str(tmp_path / "primed"),
        *args[args.index("--out") + 2 :],
    ]
    res = CliRunner().invoke(app, [*primed, "--init-policy", str(out / "policy"), "--novelty-weight", "3"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "primed" / "policy" / "config.json").read_text())["novelty_weight"] == 3.0
    bad = CliRunner().invoke(app, [*primed, "--novelty-weight", "-1"])  # ... and refuses a negative one
    assert bad.exit_code != 0 and "novelty_weight" in bad.output
    bad = CliRunner().invoke(app, [*more, "--val-selection", str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "val-selection" in bad.output
    again = CliRunner().invoke(app, args)  # resumes a finished run: nothing left to train
    assert again.exit_code == 0, again.output
    assert len(_events(out / "log.jsonl", "item")) == 2
    bad = CliRunner().invoke(app, [*args[:-2], "--val-ratios", "abc"])
    assert bad.exit_code != 0


def test_a_failing_item_is_recorded_and_training_goes_on(llava_llm, world_items, tmp_path):
    items, vals = world_items
    real = llava_llm.answer_logprobs_rows
    seen = []

    def flaky(rows, answers):
        seen.append(1)
        if len(seen) == 1:  # the first item's first reward call fails
            raise RuntimeError("decoder exploded")
        return real(rows, answers)

    llava_llm.answer_logprobs_rows = flaky
    try:
        summary = _trainer(llava_llm, items[:3], vals, tmp_path).fit()
    finally:
        del llava_llm.answer_logprobs_rows
    assert summary["finished"] and summary["items_done"] == 3
    (err,) = _events(tmp_path / "log.jsonl", "item_error")
    assert err["item_id"] == items[0].id and "decoder exploded" in err["error"]
    assert [r["item_id"] for r in _events(tmp_path / "log.jsonl", "item")] == [items[1].id, items[2].id]


def test_a_run_of_failing_items_stops_training(llava_llm, world_items, tmp_path, monkeypatch):
    import cacovid.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MAX_CONSECUTIVE_FAILURES", 2)

    def broken(rows, answers):
        raise RuntimeError("no model")

    items, vals = world_items
    llava_llm.answer_logprobs_rows = broken
    try:
        with pytest.raises(RuntimeError, match="2 training items failed in a row"):
            _trainer(llava_llm, items[:3], vals, tmp_path).fit()
    finally:
        del llava_llm.answer_logprobs_rows
    assert len(_events(tmp_path / "log.jsonl", "item_error")) == 1  # the first; the second stopped it


def test_config_sampler_options():
    assert TrainConfig.paper().sampler == "modes"
    naive = TrainConfig.paper(sampler="naive", frame_share=0.0, content_rollout=False)
    assert mode_counts(naive) == (32, 0, 0)
    with pytest.raises(ValueError, match="naive"):
        TrainConfig.paper(sampler="naive")  # the default frame share and content rollout
    with pytest.raises(ValueError, match="sampler must be one of"):
        TrainConfig.paper(sampler="plain", frame_share=0.0, content_rollout=False)
    with pytest.raises(ValueError, match="adapt_ratio"):
        TrainConfig.paper(frame_share=1.0)  # the adaptation reads a token-mode reward there is none of
    assert mode_counts(TrainConfig.paper(frame_share=1.0, adapt_ratio=False)) == (0, 31, 1)
    assert TrainConfig.from_dict(naive.to_dict()) == naive


@pytest.mark.parametrize(
    "cfg",
    [
        dict(sampler="naive", frame_share=0.0, content_rollout=False),
        dict(frame_share=1.0, adapt_ratio=False),
    ],
    ids=["naive", "frame-only"],
)
def test_ablation_samplers_train_end_to_end(llava_llm, world_items, tmp_path, cfg):
    items, _ = world_items
    policy = CaCoVIDPolicy.from_host(llava_llm, seed=1)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    summary = Trainer(llava_llm, policy, _config(**cfg), items[:2], [], tmp_path, progress=False).fit()
    assert summary["finished"] and summary["steps"] == 4
    logged = _events(tmp_path / "log.jsonl", "item")
    after = policy.state_dict()
    if cfg.get("sampler") == "naive":
        assert all("reward_token" in r and "reward_frame" not in r for r in logged)
        assert all("reward_content" not in r for r in logged)
        head = "token_head"
    else:
        assert all("reward_frame" in r and "reward_token" not in r for r in logged)
        head = "frame_head"
    changed = [k for k in before if head in k and not torch.equal(before[k], after[k])]
    # The rewards of a random host may all tie (zero advantages); the dense reward rarely does, so the
    # head the sampler trains moves.
    assert changed


def test_resume_accepts_checkpoints_from_before_the_sampler_option(llava_llm, world_items, tmp_path):
    items, _ = world_items
    _trainer(llava_llm, items[:2], [], tmp_path).fit(max_items=1)
    saved = tmp_path / "checkpoint" / "train_config.json"
    recorded = json.loads(saved.read_text())
    saved.write_text(json.dumps({k: v for k, v in recorded.items() if k != "sampler"}))
    assert _trainer(llava_llm, items[:2], [], tmp_path).fit()["items_done"] == 2
    _trainer(llava_llm, items[:2], [], tmp_path / "b").fit(max_items=1)
    with pytest.raises(ValueError, match="sampler"):
        _trainer(
            llava_llm,
            items[:2],
            [],
            tmp_path / "b",
            cfg=dict(sampler="naive", frame_share=0.0, content_rollout=False),
        ).fit()
