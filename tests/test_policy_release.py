"""The published release's inference, on request (docs/method.md §8): its causal layer
(`PolicyConfig.layer_attention="causal"`) and its budget arithmetic and fill
(`PolicyConfig.selection_rule="release"`, `policy/release.py`). Defaults keep docs/method.md's."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_equal_up_to_rounding, differ_beyond_rounding

from cacovid.policy import CaCoVIDPolicy, CaCoVIDSelector, PolicyConfig
from cacovid.policy.layer_attention import apply_layer_attention
from cacovid.policy.release import linspace_fill, release_frame_budgets, release_select

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels


def test_defaults_keep_todays_behaviour():
    cfg = PolicyConfig()
    assert (cfg.layer_attention, cfg.selection_rule) == ("bidirectional", "cacovid")
    with pytest.raises(ValueError, match="layer_attention must be one of"):
        PolicyConfig(layer_attention="sideways")
    with pytest.raises(ValueError, match="selection_rule must be one of"):
        PolicyConfig(selection_rule="mine")


def test_linspace_fill_takes_first_and_last():
    free = torch.tensor([True] * 10)
    assert linspace_fill(free, 4).nonzero().flatten().tolist() == [0, 3, 6, 9]
    free[:2] = False  # the free tokens are 2..9: picks 0, 2.33, 4.67, 7 of them
    assert linspace_fill(free, 4).nonzero().flatten().tolist() == [2, 4, 7, 9]
    assert not linspace_fill(free, 0).any()
    with pytest.raises(ValueError, match="cannot fill 9 tokens from 8"):
        linspace_fill(free, 9)


def test_frame_budgets_fix_the_rounding_on_the_largest_frame():
    # shares softmax([3, 0, 0, 0]) clipped below at 1/8 and renormalised: 0.699, 0.100 × 3;
    # times round(16) -> 11.18, 1.61 × 3 -> 11, 2, 2, 2 = 17: one too many, taken from the largest.
    k = release_frame_budgets(torch.tensor([10.0, 0, 0, 0]), (4, 4, 4), 0.25, 1.0, 1.0)
    assert k.tolist() == [10, 2, 2, 2]


def test_release_select_by_hand():
    # T=4 frames of 2x2; ρ=0.5 keeps 8 of 16; α=0.5: 4 by score, at most int(0.5·4·0.75) = 1 a frame.
    tokens = torch.tensor([[0.0, 5, 1, 2], [3, 0, 0, 0], [0, 0, 0, 9], [1, 0, 0, 0]])
    keep = release_select(tokens.flatten(), torch.tensor([1.0, 0, 0, 0]), 0.5, (4, 2, 2))
    by_score = [1, 4, 11, 12]  # each frame's best token
    # The other 12 tokens in order; 4 of them at round(linspace(0, 11, 4)) = 0, 4, 7, 11.
    rest = [i for i in range(16) if i not in by_score]
    fill = [rest[j] for j in (0, 4, 7, 11)]
    assert keep.nonzero().flatten().tolist() == sorted(by_score + fill)


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.15, 0.25, 0.5])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_release_budgets_are_the_releases(ratio, alpha):
    g = torch.Generator().manual_seed(1)
    T, H, W = 16, 7, 7
    keep = release_select(
        torch.randn(T * H * W, generator=g), torch.randn(T, generator=g), ratio, (T, H, W), alpha=alpha
    )
    assert int(keep.sum()) == max(1, math.floor(ratio * T * H * W))


def test_selector_runs_the_release_rule(llava_llm, tiny_frames, tiny_question):
    prompt = llava_llm.encode(tiny_frames, tiny_question)
    policy = CaCoVIDPolicy.from_host(llava_llm, seed=0, selection_rule="release")
    sel = CaCoVIDSelector(policy).select(prompt, 0.1)
    out = policy(prompt)
    expected = release_select(out.token_scores, out.frame_scores, 0.1, prompt.video_grid)
    assert torch.equal(sel.keep.cpu(), expected.cpu())
    with pytest.raises(ValueError, match="fill='even'"):
        CaCoVIDSelector(policy, fill="score")


def _first_video_score(policy, llm, frames, question):
    prompt = llm.encode(frames, question)
    with torch.no_grad():
        return policy(prompt).token_logits[0]


def test_causal_layer_does_not_see_the_question(video_llm, tiny_frames):
    q1 = "what color is the square ? A . red B . blue answer with the letter ."
    q2 = "which shape moves left ? A . circle B . square answer with the letter ."
    causal = CaCoVIDPolicy.from_host(video_llm, seed=0, layer_attention="causal")
    assert apply_layer_attention(causal) and apply_layer_attention(causal)  # idempotent
    assert len(causal.layer._forward_pre_hooks) == 1
    a, b = (_first_video_score(causal, video_llm, tiny_frames, q) for q in (q1, q2))
    # The question comes after the video: a causal layer cannot read it. Equal in exact arithmetic;
    # the two prompts differ in length, so their kernels round differently.
    assert_equal_up_to_rounding(a, b)
    both = CaCoVIDPolicy.from_host(video_llm, seed=0)
    assert not apply_layer_attention(both)
    a, b = (_first_video_score(both, video_llm, tiny_frames, q) for q in (q1, q2))
    assert differ_beyond_rounding(a, b)  # a bidirectional layer does: a change that tolerance would see
    # The selector completes a causal policy's set-up on its own.
    fresh = CaCoVIDPolicy.from_host(video_llm, seed=0, layer_attention="causal")
    CaCoVIDSelector(fresh)
    assert len(fresh.layer._forward_pre_hooks) == 1
