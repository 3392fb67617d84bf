"""The answer-only RL recipe of the decoys policy (recipes/toy/cacovid-decoys/rl.yaml): it never reads
evidence annotations, its leave-one-out advantages and log-odds reward behave as documented, and its
retention control moves r the right way relative to chance."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config

import cacovid
from cacovid.cli.train import read_recipe, resolve_options
from cacovid.data.synthetic import SyntheticWorld, WorldConfig
from cacovid.policy import CaCoVIDPolicy, PolicyConfig
from cacovid.train.config import TrainConfig
from cacovid.train.objective import leave_one_out_advantages
from cacovid.train.sampling import TOKEN
from cacovid.train.trainer import Trainer
from cacovid.train.update import ItemJob, PolicyUpdater
from cacovid.types import EncodedPrompt

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "toy" / "cacovid-decoys" / "rl.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _stripped(item):
    """The item with every evidence annotation removed, its counterfactual's included."""
    cf = item.counterfactual
    if cf is not None:
        cf = dataclasses.replace(cf, evidence=None)
    return dataclasses.replace(item, evidence=None, counterfactual=cf)


def test_the_recipe_trains_the_same_policy_without_evidence_annotations(tmp_path):
    run, recipe_config = resolve_options({}, read_recipe(RECIPE))
    assert run.question_match_init == "query" and recipe_config.sampler == "gumbel"
    assert run.context_width > 0  # the context term's features come from the video, never the annotations
    config = dataclasses.replace(
        recipe_config, group_size=4, items_per_step=2, val_ratios=(), checkpoint_every=100, val_every=100
    )
    adapter = cacovid.load_model("toy")
    world = SyntheticWorld(WorldConfig.preset("decoys"))
    items = [world.item("train", i) for i in range(8)]
    assert all(it.evidence is not None and it.evidence.any() for it in items)
    weights = []
    for name, data in (("annotated", items), ("stripped", [_stripped(it) for it in items])):
        policy = CaCoVIDPolicy.from_host(
            adapter,
            seed=0,
            question_match_dim=run.question_match_dim,
            question_match_init="query",
            context_width=run.context_width,
        )
        trainer = Trainer(adapter, policy, config, data, out_dir=tmp_path / name, progress=False)
        summary = trainer.fit()
        assert summary["finished"] and summary["steps"] >= 2
        weights.append({k: v.clone() for k, v in policy.state_dict().items()})
    moved = CaCoVIDPolicy.from_host(
        adapter, seed=0, question_match_dim=48, question_match_init="query", context_width=run.context_width
    )
    start = moved.state_dict()
    assert max(float((v - start[k]).abs().max()) for k, v in weights[0].items()) > 1e-4  # it trained
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key  # same inputs, same machine: bit for bit


def test_leave_one_out_advantages_keep_the_reward_scale():
    modes = torch.full((4,), TOKEN)
    config = TrainConfig()
    a = leave_one_out_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), modes, config)
    assert torch.allclose(a, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    flat = leave_one_out_advantages(torch.tensor([0.500, 0.501, 0.499, 0.500]), modes, config)
    assert float(flat.abs().max()) < 0.01  # a near-flat group stays quiet (std normalisation: ±1)
    assert float(leave_one_out_advantages(torch.tensor([0.3]), modes[:1], config)) == 0.0


def _toy_policy_and_prompt():
    T, H, W, D = 4, 4, 4, 64
    cfg = Qwen2Config(
        hidden_size=D, intermediate_size=2 * D, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=1, vocab_size=32,
    )  # fmt: skip
    policy = CaCoVIDPolicy(PolicyConfig(host_family="test", text_config=cfg.to_dict(), seed=0))
    g = torch.Generator().manual_seed(0)
    N, L = T * H * W, T * H * W + 8
    prompt = EncodedPrompt(
        torch.randn(L, D, generator=g), torch.arange(L), torch.ones(L, dtype=torch.long),
        torch.arange(4, 4 + N), (T, H, W),
    )  # fmt: skip
    return policy, prompt


@pytest.mark.parametrize(("p_correct", "direction"), [(0.95, -1), (0.27, +1), (0.55, 0)])
def test_retention_control_follows_the_lift_above_chance(p_correct, direction):
    """With four options (chance 0.25): p 0.95 is a lift of 0.93 (above 0.67: r falls), p 0.27 one of
    0.03 (below 0.13: r rises), p 0.55 one of 0.4 (inside: r stays)."""
    policy, prompt = _toy_policy_and_prompt()
    config = TrainConfig(
        sampler="gumbel", frame_share=0.0, content_rollout=False, group_size=4, iterations=1,
        ratio=0.15, ratio_min=0.03, ratio_max=0.3, adapt_vs_chance=True, adapt_low=0.13,
        adapt_high=0.67, adapt_factor=1.05, adapt_smoothing=0.9, reward="logodds",
        advantage="leave_one_out",
    )  # fmt: skip
    updater = PolicyUpdater(policy, config, total_steps=5)
    logodds = torch.logit(torch.tensor(p_correct))  # the log-odds reward of a rollout with that p

    def reward(masks: torch.Tensor) -> torch.Tensor:
        return torch.full((masks.shape[0],), float(logodds))

    for _ in range(5):
        updater.train_round([ItemJob(prompt, reward, success=torch.sigmoid, chance=0.25)])
    assert updater.success_signal == pytest.approx((p_correct - 0.25) / 0.75, abs=1e-5)
    if direction < 0:
        assert updater.ratio == pytest.approx(0.15 / 1.05**5)
    elif direction > 0:
        assert updater.ratio == pytest.approx(0.15 * 1.05**5)
    else:
        assert updater.ratio == 0.15
