"""The CaCoVID policy network: host-layer copy, true bidirectionality, heads, persistence."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from cacovid.policy import CaCoVIDPolicy, CaCoVIDSelector, PolicyConfig, PolicyOutput
from cacovid.policy.config import default_head_widths
from cacovid.types import EncodedPrompt, Selector, token_budget

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels

Q1 = "what color is the square ? A . red B . blue answer with the letter ."
Q2 = "which shape moves left ? A . circle B . square C . red answer with the letter ."


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)


_ENCODED: dict[str, tuple[EncodedPrompt, EncodedPrompt]] = {}


def _prompts(llm, frames):
    """(Q1 prompt, Q2 prompt) over the same frames, encoded once per family (encoding is the slow part)."""
    if llm.family not in _ENCODED:
        _ENCODED[llm.family] = (llm.encode(frames, Q1), llm.encode(frames, Q2))
    return _ENCODED[llm.family]


def test_shapes_and_near_zero_initial_scores(video_llm, frames):
    p, _ = _prompts(video_llm, frames)
    policy = CaCoVIDPolicy.from_host(video_llm)
    out = policy(p)
    assert isinstance(out, PolicyOutput)
    assert out.token_logits.shape == (p.num_video_tokens, 2)
    assert out.frame_logits.shape == (p.num_frames, 2)
    assert out.token_scores.shape == (p.num_video_tokens,)
    assert out.frame_scores.shape == (p.num_frames,)
    assert out.token_scores.abs().max() < 0.1  # small random heads: scores start near zero
    assert out.token_scores.std() > 0  # …but not identical
    assert all(param.dtype == torch.float32 and param.requires_grad for param in policy.parameters())
    # The copied layer is the host's first layer, of the host's own class.
    host_layer = video_llm.language_model().layers[0]
    assert type(policy.layer) is type(host_layer)
    for (n1, a), (n2, b) in zip(
        policy.layer.state_dict().items(), host_layer.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(a.float(), b.float())


def test_head_shape_follows_the_spec():
    assert default_head_widths(256) == (128, 64, 32, 16)
    cfg = PolicyConfig(text_config={"hidden_size": 256, "model_type": "qwen2"})
    assert cfg.resolved_head_widths() == (128, 64, 32, 16)


def test_scores_are_question_aware_even_for_the_first_video_token(video_llm, frames):
    """The question comes after the video: only bidirectional attention lets it reach token 0."""
    p1, p2 = _prompts(video_llm, frames)
    first = int(p1.video_positions[0])
    # Same system prefix and same video: everything up to and including the video is identical.
    last_video = int(p1.video_positions[-1])
    assert torch.equal(p1.inputs_embeds[: last_video + 1], p2.inputs_embeds[: last_video + 1])
    policy = CaCoVIDPolicy.from_host(video_llm, init_scale=1.0)
    s1, s2 = policy(p1).token_scores, policy(p2).token_scores
    assert abs(float((s1[0] - s2[0]).detach())) > 1e-4
    assert not torch.allclose(s1, s2, atol=1e-4)

    # Control: the host's own layer run the way transformers runs it (sdpa, no mask) is causal, so
    # there the first video token cannot see the question. The test above would catch that.
    layer = video_llm.first_decoder_layer().float()
    rotary = video_llm.rotary_embedding().float()

    def causal_out(p: EncodedPrompt) -> torch.Tensor:
        h = p.inputs_embeds.float().unsqueeze(0)
        pos = p.position_ids.unsqueeze(-2)
        with torch.no_grad():
            out = layer(h, attention_mask=None, position_embeddings=rotary(h, pos))
        out = out[0] if isinstance(out, tuple) else out
        return out[0, first]

    assert torch.allclose(causal_out(p1), causal_out(p2), atol=1e-6)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_every_position_sees_every_other(llava_llm, frames, impl):
    """Gradient of the FIRST video token's score reaches the LAST prompt token's embedding."""
    p, _ = _prompts(llava_llm, frames)
    policy = CaCoVIDPolicy.from_host(llava_llm, init_scale=1.0, attn_implementation=impl)
    emb = p.inputs_embeds.detach().clone().requires_grad_(True)
    q = EncodedPrompt(emb, p.position_ids, p.attention_mask, p.video_positions, p.video_grid)
    policy(q).token_scores[0].backward()
    assert emb.grad[-1].abs().sum() > 0
    assert emb.grad[-5:].abs().sum(1).min() > 0


def test_eager_and_sdpa_agree(qwen2_vl_llm, frames):
    p, _ = _prompts(qwen2_vl_llm, frames)
    a = CaCoVIDPolicy.from_host(qwen2_vl_llm, init_scale=1.0, attn_implementation="eager")
    b = CaCoVIDPolicy.from_host(qwen2_vl_llm, init_scale=1.0, attn_implementation="sdpa")
    oa, ob = a(p), b(p)
    assert torch.allclose(oa.token_logits, ob.token_logits, atol=1e-5)
    assert torch.allclose(oa.frame_logits, ob.frame_logits, atol=1e-5)


def test_causal_flags_cleared_and_host_untouched(video_llm):
    policy = CaCoVIDPolicy.from_host(video_llm)
    flags = [m.is_causal for m in policy.layer.modules() if hasattr(m, "is_causal")]
    assert flags and not any(flags)
    host_flags = [
        m.is_causal for m in video_llm.language_model().layers[0].modules() if hasattr(m, "is_causal")
    ]
    assert all(host_flags)  # the frozen host is still causal
    host_before = copy.deepcopy(video_llm.language_model().layers[0].state_dict())
    with torch.no_grad():
        for prm in policy.layer.parameters():
            prm.add_(1.0)
    for k, v in video_llm.language_model().layers[0].state_dict().items():
        assert torch.equal(v, host_before[k])


def test_position_ids_enter_the_layer(qwen2_5_vl_llm, frames):
    p, _ = _prompts(qwen2_5_vl_llm, frames)
    assert p.position_ids.dim() == 2  # (3, L) M-RoPE
    policy = CaCoVIDPolicy.from_host(qwen2_5_vl_llm, init_scale=1.0)
    flat = p.position_ids[0].unsqueeze(0).expand(3, -1).clone()  # drop the (h, w) coordinates
    q = EncodedPrompt(p.inputs_embeds, flat, p.attention_mask, p.video_positions, p.video_grid)
    assert not torch.allclose(policy(p).token_scores, policy(q).token_scores, atol=1e-5)


def test_batch_with_padding_matches_single_prompts(video_llm, frames):
    p1, p2 = _prompts(video_llm, frames)
    assert p1.inputs_embeds.shape[0] != p2.inputs_embeds.shape[0]
    policy = CaCoVIDPolicy.from_host(video_llm, init_scale=1.0)
    batch = policy([p1, p2])
    for single, got in zip((policy(p1), policy(p2)), batch, strict=True):
        assert torch.allclose(single.token_logits, got.token_logits, atol=1e-5)
        assert torch.allclose(single.frame_logits, got.frame_logits, atol=1e-5)


def test_inference_mode_prompts_are_trainable(llava_llm, frames):
    with torch.inference_mode():
        p = llava_llm.encode(frames[:2], Q1)
    policy = CaCoVIDPolicy.from_host(llava_llm)
    out = policy(p)
    (out.token_scores.sum() + out.frame_scores.sum()).backward()
    assert policy.token_head[0].weight.grad is not None


def test_heads_are_seeded(llava_llm, frames):
    p, _ = _prompts(llava_llm, frames)
    a = CaCoVIDPolicy.from_host(llava_llm, seed=3)(p).token_logits
    b = CaCoVIDPolicy.from_host(llava_llm, seed=3)(p).token_logits
    c = CaCoVIDPolicy.from_host(llava_llm, seed=4)(p).token_logits
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_save_and_load_round_trip(video_llm, frames, tmp_path):
    p, _ = _prompts(video_llm, frames)
    policy = CaCoVIDPolicy.from_host(video_llm, init_scale=1.0, seed=7)
    with torch.no_grad():  # make the layer differ from the host's so loading must restore it
        for prm in policy.layer.parameters():
            prm.mul_(1.01)
    policy.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["host_family"] == video_llm.family
    assert cfg["host_name"] == video_llm.name_or_path
    assert cfg["text_config"]["hidden_size"] == video_llm.hidden_size
    assert (tmp_path / "model.safetensors").is_file()
    want = policy(p)
    for loaded in (
        CaCoVIDPolicy.from_pretrained(tmp_path),
        CaCoVIDPolicy.from_pretrained(tmp_path, host=video_llm),
    ):
        got = loaded(p)
        assert torch.allclose(want.token_logits, got.token_logits, atol=1e-6)
        assert torch.allclose(want.frame_logits, got.frame_logits, atol=1e-6)


def test_loading_onto_another_host_is_refused(llava_llm, qwen2_vl_llm, tmp_path):
    from cacovid.models import LlavaOneVisionVideoLLM
    from cacovid.testing.tiny import tiny_llava_onevision

    CaCoVIDPolicy.from_host(llava_llm).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="llava_onevision"):
        CaCoVIDPolicy.from_pretrained(tmp_path, host=qwen2_vl_llm)
    model, proc = tiny_llava_onevision(text_hidden=32, text_layers=1, vision_hidden=32, vision_layers=1)
    other = LlavaOneVisionVideoLLM(model, proc, name_or_path="tiny-32")
    with pytest.raises(ValueError, match="hidden_size"):
        CaCoVIDPolicy.from_pretrained(tmp_path, host=other)
    with pytest.raises(ValueError, match="not a saved CaCoVID policy"):
        CaCoVIDPolicy.from_pretrained(tmp_path / "nowhere")


def test_prompt_of_another_hidden_size_is_refused(llava_llm):
    policy = CaCoVIDPolicy.from_host(llava_llm)
    D = llava_llm.hidden_size + 8
    p = EncodedPrompt(
        torch.zeros(10, D), torch.arange(10), torch.ones(10, dtype=torch.long), torch.arange(4), (1, 2, 2)
    )
    with pytest.raises(ValueError, match="hidden size"):
        policy(p)


def test_novelty_prior_shifts_scores_by_weighted_standardised_novelty(video_llm, frames, tmp_path):
    from cacovid.ops import standardise, temporal_novelty

    p, _ = _prompts(video_llm, frames)
    plain = CaCoVIDPolicy.from_host(video_llm, init_scale=1.0, seed=3)
    primed = CaCoVIDPolicy.from_host(video_llm, init_scale=1.0, seed=3, novelty_weight=2.5)
    video = p.inputs_embeds[p.video_positions].reshape(p.num_frames, p.tokens_per_frame, -1)
    n = standardise(temporal_novelty(video)).reshape(-1)
    assert n.abs().max() > 0.5  # the random frames do give the prior something to say
    a, b = plain(p), primed(p)
    assert torch.allclose(b.token_scores - a.token_scores, 2.5 * n, atol=1e-4)
    assert torch.allclose(b.frame_logits, a.frame_logits)
    # The prior is an input, not a parameter: gradients reach the heads exactly as without it.
    b.token_scores.sum().backward()
    a.token_scores.sum().backward()
    for pa, pb in zip(plain.token_head.parameters(), primed.token_head.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5)
    primed.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["novelty_weight"] == 2.5
    assert torch.allclose(CaCoVIDPolicy.from_pretrained(tmp_path)(p).token_scores, b.token_scores, atol=1e-5)


def test_config_without_novelty_weight_loads_as_method_md_policy(llava_llm, tmp_path):
    CaCoVIDPolicy.from_host(llava_llm).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["novelty_weight"]  # configs saved before the option existed
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert CaCoVIDPolicy.from_pretrained(tmp_path).config.novelty_weight == 0.0


def test_bad_config_values_are_rejected():
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="novelty_weight"):
            PolicyConfig(novelty_weight=bad)
    with pytest.raises(ValueError, match="attn_implementation"):
        PolicyConfig(attn_implementation="flex_attention")
    with pytest.raises(ValueError, match="init_scale"):
        PolicyConfig(init_scale=0.0)


def test_selector_returns_exact_budget_and_times_itself(video_llm, frames):
    p, _ = _prompts(video_llm, frames)
    sel = CaCoVIDSelector(CaCoVIDPolicy.from_host(video_llm))
    assert sel.name == "cacovid" and isinstance(sel, Selector)
    for ratio in (1.0, 0.5, 0.25, 0.1, 0.01):
        s = sel.select(p, ratio)
        assert s.keep.dtype == torch.bool and s.keep.shape == (p.num_video_tokens,)
        assert s.num_kept == token_budget(p.num_video_tokens, ratio)
        assert s.compression_ms > 0
    with pytest.raises(ValueError):
        sel.select(p, 0.0)
    with pytest.raises(ValueError, match="fill"):
        CaCoVIDSelector(sel.policy, fill="random")


def test_selector_follows_the_scores(llava_llm, frames):
    """With α = 1 the kept tokens are exactly the per-frame best by score."""
    p, _ = _prompts(llava_llm, frames)
    policy = CaCoVIDPolicy.from_host(llava_llm, init_scale=1.0)
    sel = CaCoVIDSelector(policy, alpha=1.0, cap=10.0)
    keep = sel.select(p, 0.25).keep.reshape(p.num_frames, -1)
    with torch.no_grad():
        s = policy(p).token_scores.reshape(p.num_frames, -1)
    for t in range(p.num_frames):
        k = int(keep[t].sum())
        if k:
            assert set(torch.topk(s[t], k).indices.tolist()) == set(keep[t].nonzero().squeeze(1).tolist())


# ---- the question-match term ---------------------------------------------------------------------
def _two_questions(llm):
    from cacovid.data.sources import synthetic_source

    item = synthetic_source("preset=decoys,frames=4,target_frames=2:3", "test", 1).sequence[0]
    return llm.encode_item(item), llm.encode_item(item.counterfactual_item())


@pytest.fixture(scope="module")
def toy_llm():
    from cacovid.models import load_video_llm

    return load_video_llm("toy")  # its tokenizer knows the world's colour and shape words


def test_question_match_starts_silent_then_reads_the_question(toy_llm, tmp_path):
    llava_llm = toy_llm
    own, other = _two_questions(llava_llm)
    plain = CaCoVIDPolicy.from_host(llava_llm, seed=0)
    matched = CaCoVIDPolicy.from_host(llava_llm, seed=0, question_match_dim=8)
    # W_k starts at zero: a fresh policy scores exactly as without the term
    torch.testing.assert_close(matched(own).token_logits, plain(own).token_logits)
    assert matched.question_match is not None and plain.question_match is None
    assert set(map(id, matched.question_match.parameters())) <= set(map(id, matched.head_parameters()))
    with torch.no_grad():
        matched.question_match.key.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    # the term alone (layer and heads give the rest) follows the question, on the same video
    term_own, term_other = matched.question_term(own), matched.question_term(other)
    assert (term_own - term_other).abs().max() > 1e-3
    # and it is trained: the score of a token gets a gradient through W_q and W_k
    matched(own).token_scores[0].backward()
    assert matched.question_match.query.weight.grad.abs().sum() > 0
    matched.save_pretrained(tmp_path)
    loaded = CaCoVIDPolicy.from_pretrained(tmp_path, host=llava_llm)
    assert loaded.config.question_match_dim == 8
    torch.testing.assert_close(loaded(own).token_logits, matched(own).token_logits.detach())


def test_question_match_dim_is_validated():
    with pytest.raises(ValueError, match="question_match_dim"):
        PolicyConfig(question_match_dim=-1)
    with pytest.raises(ValueError, match="question_match_dim"):
        PolicyConfig(question_match_dim=1.5)
    assert PolicyConfig.from_dict({}).question_match_dim == 0  # saved before the option existed
