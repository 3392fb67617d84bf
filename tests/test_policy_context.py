"""The cross-frame context term (`policy/context.py`): its features, its silent start, that it learns
the conjunction it exists for, and that a policy carrying it trains, saves and loads."""

from __future__ import annotations

import pytest
import torch

from cacovid.policy import CaCoVIDPolicy, PolicyConfig
from cacovid.policy.context import CrossFrameContext, cross_frame_similarities

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels


def _video(T: int = 6, H: int = 3, W: int = 3, D: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    background = torch.randn(D, generator=g)
    video = background.expand(T, H, W, D).clone() + 0.01 * torch.randn(T, H, W, D, generator=g)
    video[:, 0, 0] = torch.randn(D, generator=g)  # something that stays in one place all along
    video[min(2, T - 1), 1, 1] = torch.randn(D, generator=g)  # something seen in one frame only
    return video


def test_similarities_tell_what_stays_from_what_comes_and_goes():
    sims = cross_frame_similarities(_video()).reshape(6, 3, 3, 3)
    previous, following, persistence = sims.unbind(-1)
    assert persistence[2, 1, 1] < persistence[2, 0, 0]  # transient below static
    assert persistence[2, 1, 1] == persistence.min()
    assert previous[2, 1, 1] < previous[3, 1, 1] or following[2, 1, 1] < following[0, 1, 1]
    for f in (previous, following, persistence):  # standardised over the video
        assert abs(float(f.mean())) < 1e-5 and abs(float(f.std()) - 1.0) < 1e-3
    assert torch.equal(cross_frame_similarities(_video(T=1)), torch.zeros(9, 3))
    with pytest.raises(ValueError, match="T, H, W, D"):
        cross_frame_similarities(torch.zeros(4, 9, 16))


def test_context_starts_silent_and_checks_shapes():
    ctx = CrossFrameContext(8, torch.Generator().manual_seed(0))
    match = torch.randn(6 * 9)
    sims = cross_frame_similarities(_video())
    assert torch.equal(ctx(match, (6, 3, 3), sims), torch.zeros(54))
    with pytest.raises(ValueError, match="grid"):
        ctx(match, (6, 3, 4), sims)
    with pytest.raises(ValueError, match="positive width"):
        CrossFrameContext(0, torch.Generator())


def test_context_learns_match_and_transient_together():
    """Targets: tokens that match the question *and* come and go. A static token that matches and a
    transient one that does not are the distractors; the token-wise match alone ranks them level."""
    g = torch.Generator().manual_seed(0)
    ctx = CrossFrameContext(16, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(ctx.parameters(), lr=3e-2)

    def episode():
        video = _video(seed=int(torch.randint(0, 10_000, (1,), generator=g)))
        match = torch.zeros(6, 3, 3)
        match[:, 0, 0] = 1.0  # the static object has the named colour
        match[2, 1, 1] = 1.0  # so has the transient one: the target
        return match.reshape(-1), cross_frame_similarities(video), 2 * 9 + 4

    for _ in range(150):
        match, sims, target = episode()
        score = match + ctx(match, (6, 3, 3), sims)
        loss = -torch.log_softmax(score, 0)[target]
        opt.zero_grad()
        loss.backward()
        opt.step()
    match, sims, target = episode()
    with torch.no_grad():
        score = match + ctx(match, (6, 3, 3), sims)
    assert int(score.argmax()) == target
    assert score[target] > score.reshape(6, 3, 3)[:, 0, 0].max() + 1.0


@pytest.fixture(scope="module")
def toy_llm():
    from cacovid.models import load_video_llm

    return load_video_llm("toy")


def test_policy_with_context_starts_as_without_trains_and_round_trips(toy_llm, tmp_path):
    from cacovid.data.sources import synthetic_source

    item = synthetic_source("preset=decoys,frames=4,target_frames=2:3", "test", 1).sequence[0]
    prompt = toy_llm.encode_item(item)
    matched = CaCoVIDPolicy.from_host(toy_llm, seed=0, question_match_dim=8)
    with_context = CaCoVIDPolicy.from_host(toy_llm, seed=0, question_match_dim=8, context_width=4)
    torch.testing.assert_close(with_context(prompt).token_logits, matched(prompt).token_logits)
    assert set(map(id, with_context.context.parameters())) <= set(map(id, with_context.head_parameters()))
    with torch.no_grad():
        with_context.context.out.weight.fill_(0.5)
        with_context.question_match.key.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    with_context(prompt).token_scores[:5].sum().backward()
    assert with_context.context.hidden.weight.grad.abs().sum() > 0
    assert with_context.question_match.key.weight.grad.abs().sum() > 0  # through the r features too
    with_context.save_pretrained(tmp_path)
    loaded = CaCoVIDPolicy.from_pretrained(tmp_path, host=toy_llm)
    assert loaded.config.context_width == 4
    torch.testing.assert_close(loaded(prompt).token_logits, with_context(prompt).token_logits.detach())


def test_context_width_is_validated():
    with pytest.raises(ValueError, match="question-match"):
        PolicyConfig(context_width=4)
    with pytest.raises(ValueError, match="context_width"):
        PolicyConfig(question_match_dim=4, context_width=-1)
    with pytest.raises(ValueError, match="context_width"):
        PolicyConfig(question_match_dim=4, context_width=2.5)
    assert PolicyConfig.from_dict({}).context_width == 0  # saved before the option existed


def test_a_flash_host_runs_the_copied_layer_in_bf16(toy_llm):
    """Flash kernels take half precision only: the float32 policy runs its layer under bf16 autocast
    and hands its heads float32 again. (The kernel itself needs a GPU; a stand-in layer records what
    it was given.)"""
    from cacovid.data.sources import synthetic_source

    item = synthetic_source("preset=decoys,frames=4,target_frames=2:3", "test", 1).sequence[0]
    prompt = toy_llm.encode_item(item)
    policy = CaCoVIDPolicy.from_host(toy_llm, seed=0, attn_implementation="sdpa")
    seen = []

    def stand_in(hidden, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return (hidden * torch.ones((), dtype=torch.bfloat16),)

    policy.layer.forward = stand_in
    assert policy(prompt).token_logits.dtype == torch.float32 and seen[-1][0] is False
    policy.config.attn_implementation = "flash_attention_2"
    out = policy(prompt)
    assert seen[-1] == (True, torch.bfloat16) and out.token_logits.dtype == torch.float32
