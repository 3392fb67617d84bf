"""Pooled scoring (`PolicyConfig.pool_size`, `policy/pooling.py`): the pooled prompt holds the cell
means at their first members' places and positions, pool size 1 is the policy as it was bit for bit,
and a pooled policy scores every original token, batches, saves, loads, trains and is a `cacovid
train` option."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import assert_equal_up_to_rounding

from cacovid.policy import CaCoVIDPolicy, CaCoVIDSelector, PolicyConfig
from cacovid.policy.config import STRUCTURAL_KEYS
from cacovid.policy.layers import bidirectional_mask
from cacovid.policy.pooling import cell_index, first_members, frame_means, pool_prompt
from cacovid.types import EncodedPrompt, token_budget

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels

Q1 = "what color is the square ? A . red B . blue answer with the letter ."
Q2 = "which shape moves left ? A . circle B . square C . red answer with the letter ."


def _synthetic_prompt(T: int = 2, H: int = 3, W: int = 3, D: int = 4, mrope: bool = False) -> EncodedPrompt:
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


def _first_members_by_hand(T: int, H: int, W: int, k: int) -> list[int]:
    """Index among the video tokens of each cell's top-left token, cells in (t, row, column) order."""
    return [t * H * W + i * W + j for t in range(T) for i in range(0, H, k) for j in range(0, W, k)]


def _weighted(policy: CaCoVIDPolicy) -> CaCoVIDPolicy:
    """Fresh question-match and context terms start at zero: give them weight so they change scores."""
    with torch.no_grad():
        policy.question_match.key.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
        policy.context.out.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2))
    return policy


def _reference_logits(policy: CaCoVIDPolicy, prompt: EncodedPrompt, pool: int = 1):
    """The policy's forward for one prompt written out as it was before the pool option (the layer over
    the whole prompt, heads, terms), and, with `pool` k > 1, the layer and heads on the pooled prompt,
    their logits broadcast to the cells' members and the terms on the full grid."""
    pooled = pool_prompt(prompt, pool)
    scored = pooled.prompt if pool > 1 else prompt
    dev, dtype = policy.device, policy.norm.weight.dtype
    hidden = scored.inputs_embeds.to(dev, dtype).unsqueeze(0)
    pos = scored.position_ids.to(dev)
    pos = pos.unsqueeze(1) if pos.dim() == 2 else pos.unsqueeze(0)
    mask = bidirectional_mask(
        scored.attention_mask.bool().unsqueeze(0), policy.config.attn_implementation, dtype
    )
    out = policy.layer(
        hidden,
        attention_mask=mask,
        position_embeddings=policy.rotary(hidden, pos),
        position_ids=None,
        is_causal=False,
    )
    out = out[0] if isinstance(out, tuple) else out
    video = out[0, scored.video_positions.clone()].to(dtype)
    token_logits = policy.token_head(policy.norm(video))
    if pool > 1:
        token_logits = token_logits[pooled.members]
        frame_mean = video[pooled.members].reshape(prompt.num_frames, prompt.tokens_per_frame, -1).mean(1)
    else:
        frame_mean = video.reshape(prompt.num_frames, prompt.tokens_per_frame, -1).mean(1)
    if policy.config.novelty_weight:
        token_logits = token_logits + policy.novelty_prior(prompt)
    if policy.question_match is not None:
        token_logits = token_logits + policy.question_term(prompt)
    return token_logits, policy.frame_head(policy.norm(frame_mean))


# ---- the pooled prompt ----------------------------------------------------------------------------
@pytest.mark.parametrize("mrope", [False, True])
def test_pool_prompt_is_the_cell_means_at_the_first_members_place(mrope):
    prompt = _synthetic_prompt(mrope=mrope)
    pooled, members, sizes = pool_prompt(prompt, 2)
    assert pooled.video_grid == (2, 2, 2)  # 3 x 3 frames: cells of 4, 2, 2 and 1 tokens
    assert sizes.tolist() == [4, 2, 2, 1]
    assert pooled.inputs_embeds.shape == (2 + 8 + 3, 4)
    # Frame 0, grid (h, w) → video token 3h + w; its cells:
    assert members.tolist()[:9] == [0, 0, 1, 0, 0, 1, 2, 2, 3]
    assert members.tolist()[9:] == [m + 4 for m in members.tolist()[:9]]
    video = prompt.inputs_embeds[prompt.video_positions]
    for cell in range(8):
        want = video[members == cell].mean(dim=0)
        # The library sums with index_add_, the reference with mean(): equal up to rounding only.
        torch.testing.assert_close(pooled.inputs_embeds[pooled.video_positions[cell]], want)
    firsts = _first_members_by_hand(2, 3, 3, 2)
    assert firsts == [0, 2, 6, 8, 9, 11, 15, 17]
    original = prompt.position_ids[..., prompt.video_positions[firsts]]
    assert torch.equal(pooled.position_ids[..., pooled.video_positions], original)
    assert pooled.video_positions.tolist() == list(range(2, 10))
    text = torch.cat([torch.arange(2), torch.arange(20, 23)])
    assert torch.equal(pooled.inputs_embeds[[0, 1, 10, 11, 12]], prompt.inputs_embeds[text])
    assert torch.equal(pooled.position_ids[..., [0, 1, 10, 11, 12]], prompt.position_ids[..., text])
    assert torch.equal(pooled.input_ids[[0, 1, 10, 11, 12]], text)
    same, ident, ones = pool_prompt(prompt, 1)
    assert torch.equal(same.inputs_embeds, prompt.inputs_embeds) and torch.equal(ident, torch.arange(18))
    assert torch.equal(ones, torch.ones(9, dtype=torch.long))
    # The frame mean of per-cell values broadcast to their members, without the broadcast.
    values = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        frame_means(values, pool_prompt(prompt, 2)), values[members].reshape(2, 9, 5).mean(1)
    )
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="pool size"):
            cell_index(3, 3, bad)


def test_cells_cover_uneven_frames():
    cells, rows, cols = cell_index(7, 5, 3)
    assert (rows, cols) == (3, 2)
    assert torch.bincount(cells).tolist() == [9, 6, 9, 6, 3, 2]
    assert first_members(7, 5, 3).tolist() == _first_members_by_hand(1, 7, 5, 3)


# ---- the config option ----------------------------------------------------------------------------
def test_pool_size_is_validated_saved_and_not_structural(tmp_path):
    assert PolicyConfig().pool_size == 1
    assert PolicyConfig.from_dict({}).pool_size == 1  # a policy folder saved before the option existed
    for bad in (0, -2, 1.5, True, "2", None):
        with pytest.raises(ValueError, match="pool_size must be an integer >= 1"):
            PolicyConfig(pool_size=bad)
    cfg = PolicyConfig(text_config={"hidden_size": 8, "model_type": "qwen2"}, pool_size=3)
    cfg.save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["pool_size"] == 3
    assert PolicyConfig.load(tmp_path / "config.json") == cfg
    assert "pool_size" not in STRUCTURAL_KEYS  # the same weights run at any pool size


# ---- pool size 1 is the policy as it was ----------------------------------------------------------
@pytest.fixture(scope="module")
def toy_llm():
    from cacovid.models import load_video_llm

    return load_video_llm("toy")


@pytest.fixture(scope="module")
def toy_prompts(toy_llm):
    from cacovid.data.sources import synthetic_source

    items = synthetic_source("preset=decoys,frames=4,target_frames=2:3", "test", 2).sequence
    return [toy_llm.encode_item(item) for item in items]


def test_pool_size_one_is_the_policy_without_the_option_bit_for_bit(toy_llm, toy_prompts, tmp_path):
    prompt = toy_prompts[0]
    policy = _weighted(
        CaCoVIDPolicy.from_host(toy_llm, seed=0, question_match_dim=8, context_width=4, novelty_weight=2.0)
    )
    assert policy.config.pool_size == 1
    with torch.no_grad():
        got = policy(prompt)
        want_tokens, want_frames = _reference_logits(policy, prompt)
    assert torch.equal(got.token_logits, want_tokens) and torch.equal(got.frame_logits, want_frames)
    # A policy folder written before the option existed (no pool_size in config.json) loads as pool 1
    # and scores bit for bit the same.
    policy.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["pool_size"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = CaCoVIDPolicy.from_pretrained(tmp_path, host=toy_llm)
    assert old.config.pool_size == 1
    with torch.no_grad():
        assert torch.equal(old(prompt).token_logits, got.token_logits)
        assert torch.equal(old(prompt).frame_logits, got.frame_logits)
    # with_pool_size(1) of a pooled copy is the original policy again; the original is untouched.
    pooled = policy.with_pool_size(2)
    assert pooled.config.pool_size == 2 and policy.config.pool_size == 1
    with torch.no_grad():
        assert torch.equal(pooled.with_pool_size(1)(prompt).token_logits, got.token_logits)
    with pytest.raises(ValueError, match="pool_size"):
        policy.with_pool_size(0)


def test_pooled_scores_are_the_layer_on_cells_plus_full_grid_terms(toy_llm, toy_prompts):
    prompt = toy_prompts[0]
    policy = _weighted(
        CaCoVIDPolicy.from_host(
            toy_llm, seed=0, init_scale=1.0, question_match_dim=8, context_width=4, novelty_weight=2.0
        )
    ).with_pool_size(2)
    with torch.no_grad():
        out = policy(prompt)
        want_tokens, want_frames = _reference_logits(policy, prompt, pool=2)
        terms = policy.question_term(prompt) + policy.novelty_prior(prompt)
    assert_equal_up_to_rounding(out.token_logits, want_tokens)
    assert_equal_up_to_rounding(out.frame_logits, want_frames)
    # Less the full-grid terms, every member of a cell has its cell's score; with them they differ.
    members = pool_prompt(prompt, 2).members
    layer_part = out.token_scores - (terms[:, 1] - terms[:, 0])
    for cell in range(10):
        inside = layer_part[members == cell]
        assert float(inside.max() - inside.min()) < 1e-4
    cell = int(torch.bincount(members).argmax())
    assert out.token_scores[members == cell].unique().numel() > 1
    # The selector runs it and keeps exactly the budget.
    keep = CaCoVIDSelector(policy).select(prompt, 0.1).keep
    assert keep.shape == (prompt.num_video_tokens,)
    assert int(keep.sum()) == token_budget(prompt.num_video_tokens, 0.1)


# ---- the three model families ---------------------------------------------------------------------
_ENCODED: dict[str, tuple[EncodedPrompt, EncodedPrompt]] = {}


def _prompts(llm, frames) -> tuple[EncodedPrompt, EncodedPrompt]:
    """Two questions over the same frames, encoded once per family (encoding is the slow part)."""
    if llm.family not in _ENCODED:
        _ENCODED[llm.family] = (llm.encode(frames, Q1), llm.encode(frames, Q2))
    return _ENCODED[llm.family]


def test_pooled_prompt_keeps_each_cells_first_position(video_llm, tiny_frames):
    prompt, _ = _prompts(video_llm, tiny_frames)
    T, H, W = prompt.video_grid
    assert (H, W) == (7, 7)  # a side that is not a multiple of the pool size
    if video_llm.family.startswith("qwen"):
        assert prompt.position_ids.shape[0] == 3  # M-RoPE: (t, h, w) rows
    pooled = pool_prompt(prompt, 2).prompt
    assert pooled.video_grid == (T, 4, 4)
    firsts = _first_members_by_hand(T, H, W, 2)
    want = prompt.position_ids[..., prompt.video_positions[firsts]]
    assert torch.equal(pooled.position_ids[..., pooled.video_positions], want)
    video = set(prompt.video_positions.tolist())
    others = [i for i in range(prompt.inputs_embeds.shape[0]) if i not in video]
    assert pooled.inputs_embeds.shape[0] == len(others) + T * 16
    rest = torch.ones(pooled.inputs_embeds.shape[0], dtype=torch.bool)
    rest[pooled.video_positions] = False
    assert torch.equal(pooled.position_ids[..., rest], prompt.position_ids[..., others])
    assert torch.equal(pooled.inputs_embeds[rest], prompt.inputs_embeds[others])


def test_pooled_policy_scores_batches_and_trains_through_the_cells(video_llm, tiny_frames):
    p1, p2 = _prompts(video_llm, tiny_frames)
    policy = CaCoVIDPolicy.from_host(video_llm, init_scale=1.0, pool_size=2)
    out = policy(p1)
    assert out.token_logits.shape == (p1.num_video_tokens, 2)
    assert out.frame_logits.shape == (p1.num_frames, 2)
    assert torch.isfinite(out.token_logits).all() and torch.isfinite(out.frame_logits).all()
    # One score per cell (no per-token terms here), so fewer distinct scores than tokens, but not one.
    distinct = out.token_scores.detach().unique().numel()
    assert 1 < distinct <= p1.num_frames * 16 < p1.num_video_tokens
    # Gradients reach the copied layer and both heads through the pooled path.
    (out.token_scores.sum() + out.frame_scores.sum()).backward()
    for module in (policy.layer, policy.token_head, policy.frame_head):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    # A right-padded batch gives what each prompt gives alone.
    with torch.no_grad():
        batch = policy([p1, p2])
        for single, got in zip((policy(p1), policy(p2)), batch, strict=True):
            assert_equal_up_to_rounding(got.token_logits, single.token_logits)
            assert_equal_up_to_rounding(got.frame_logits, single.frame_logits)


def test_pooled_policy_saves_and_loads(video_llm, tiny_frames, tmp_path):
    prompt, _ = _prompts(video_llm, tiny_frames)
    policy = CaCoVIDPolicy.from_host(video_llm, init_scale=1.0, question_match_dim=4, pool_size=2)
    policy.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["pool_size"] == 2
    loaded = CaCoVIDPolicy.from_pretrained(tmp_path, host=video_llm)
    assert loaded.config.pool_size == 2
    with torch.no_grad():
        a, b = policy(prompt), loaded(prompt)
    assert torch.equal(a.token_logits, b.token_logits) and torch.equal(a.frame_logits, b.frame_logits)


# ---- training ------------------------------------------------------------------------------------
def test_a_pooled_policy_trains(llava_llm, tmp_path):
    from cacovid.data.synthetic import SyntheticWorld, WorldConfig
    from cacovid.train.config import TrainConfig
    from cacovid.train.trainer import Trainer

    items = list(SyntheticWorld(WorldConfig(frames=4, target_frames=(1, 2))).items("train", 2))
    config = TrainConfig.paper(
        group_size=4,
        iterations=1,
        reward="dense",
        blind_filter=False,
        lr=1e-2,
        warmup_fraction=0.0,
        checkpoint_every=100,
        val_every=100,
        val_ratios=(0.5,),
        seed=3,
    )
    policy = CaCoVIDPolicy.from_host(llava_llm, seed=1, pool_size=2)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    summary = Trainer(llava_llm, policy, config, items, [], tmp_path, progress=False).fit()
    assert summary["finished"] and summary["steps"] == 2
    after = policy.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"layer", "token_head"} <= changed
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if x["event"] == "item"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert CaCoVIDPolicy.from_pretrained(tmp_path / "policy", host=llava_llm).config.pool_size == 2

    # Its checkpoint resumes only at the pool size it was trained at.
    from cacovid.train.checkpoint import find_checkpoint, load_checkpoint

    checkpoint = find_checkpoint(tmp_path)
    assert checkpoint is not None
    with pytest.raises(ValueError, match="pool_size 2"):
        load_checkpoint(checkpoint, CaCoVIDPolicy.from_host(llava_llm, seed=1))
    load_checkpoint(checkpoint, CaCoVIDPolicy.from_host(llava_llm, seed=1, pool_size=2))


# ---- `cacovid train --pool-size` -----------------------------------------------------------------
def test_cli_trains_a_fresh_policy_at_the_recipes_pool_size(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cacovid.cli.train import app, read_recipe, resolve_options
    from cacovid.testing.tiny import tiny_llava_onevision

    model, proc = tiny_llava_onevision(
        text_hidden=32, text_layers=1, heads=4, kv_heads=2, vision_hidden=32, vision_layers=1
    )
    model.save_pretrained(tmp_path / "model")
    proc.save_pretrained(tmp_path / "model")
    recipe = {
        "preset": "paper",
        "model": str(tmp_path / "model"),
        "world": "frames=4,target_frames=1:2",
        "n_items": 1,
        "val_items": 0,
        "group_size": 4,
        "iterations": 1,
        "blind_filter": False,
        "reward": "dense",
        "progress": False,
        "out": str(tmp_path / "run"),
        "pool_size": 2,
    }
    path = tmp_path / "pooled.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run, _ = resolve_options({}, read_recipe(path))
    assert run.pool_size == 2
    assert resolve_options({"pool_size": 3}, read_recipe(path))[0].pool_size == 3  # the command line wins
    res = CliRunner().invoke(app, ["--config", str(path)])
    assert res.exit_code == 0, res.output
    assert PolicyConfig.load(tmp_path / "run" / "policy" / "config.json").pool_size == 2
    # Starting from a saved policy keeps its pool size unless the run sets one.
    again = {**recipe, "init_policy": str(tmp_path / "run" / "policy"), "out": str(tmp_path / "again")}
    del again["pool_size"]
    path.write_text(yaml.safe_dump(again))
    res = CliRunner().invoke(app, ["--config", str(path)])
    assert res.exit_code == 0, res.output
    assert PolicyConfig.load(tmp_path / "again" / "policy" / "config.json").pool_size == 2
    res = CliRunner().invoke(app, ["--config", str(path), "--pool-size", "0", "--out", str(tmp_path / "bad")])
    assert res.exit_code != 0 and "pool_size must be an integer >= 1" in " ".join(res.output.split())
