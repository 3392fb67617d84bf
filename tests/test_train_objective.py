"""Group advantages and the clipped, balanced surrogate (docs/method.md §4 steps 4–5)."""

from __future__ import annotations

import math

import pytest
import torch

from cacovid.train.objective import (
    Memory,
    bernoulli_kl_to_half,
    clipped_surrogate,
    decision_logprobs,
    group_advantages,
    policy_loss,
)
from cacovid.train.sampling import CONTENT, FRAME, TOKEN


def test_advantages_are_normalised_per_mode():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5])
    modes = torch.tensor([TOKEN, TOKEN, TOKEN, TOKEN, FRAME, FRAME, CONTENT])
    a = group_advantages(rewards, modes, content_baseline=False)
    tok = torch.tensor([1.0, 0.0, 1.0, 0.0])
    want_tok = (tok - tok.mean()) / (tok.std(unbiased=False) + 1e-4)
    assert torch.allclose(a[:4], want_tok)
    fr = torch.tensor([0.0, 1.0])
    assert torch.allclose(a[4:6], (fr - fr.mean()) / (fr.std(unbiased=False) + 1e-4))
    assert float(a[6]) == 0.0


def test_advantage_eps_quiets_near_constant_dense_rewards():
    # A dense-reward group whose probabilities differ by 0.001: the default ε blows the noise up to
    # unit advantages; an ε at the reward's meaningful spread keeps it small, and leaves a group with
    # a real spread almost unchanged.
    modes = torch.full((4,), TOKEN)
    flat = torch.tensor([0.250, 0.251, 0.249, 0.250])
    assert float(group_advantages(flat, modes, content_baseline=False).abs().max()) > 0.9
    assert float(group_advantages(flat, modes, content_baseline=False, eps=0.05).abs().max()) < 0.05
    spread = torch.tensor([0.9, 0.1, 0.9, 0.1])
    a = group_advantages(spread, modes, content_baseline=False, eps=0.05)
    assert torch.allclose(a, torch.tensor([1.0, -1.0, 1.0, -1.0]) * 0.4 / 0.45, atol=1e-5)


def test_advantage_eps_defaults_to_method_and_is_validated():
    from cacovid.train.config import TrainConfig

    assert TrainConfig().advantage_eps == 1e-4  # docs/method.md §4 step 4
    with pytest.raises(ValueError, match="advantage_eps"):
        TrainConfig(advantage_eps=0.0)


def test_content_rollout_joins_the_baseline_when_enabled():
    rewards = torch.tensor([1.0, 1.0, 0.0])
    modes = torch.tensor([TOKEN, TOKEN, CONTENT])
    without = group_advantages(rewards, modes, content_baseline=False)
    assert torch.allclose(without[:2], torch.zeros(2))  # all token rollouts equal → no signal
    with_ = group_advantages(rewards, modes, content_baseline=True)
    ref = torch.tensor([1.0, 1.0, 0.0])
    want = (1.0 - ref.mean()) / (ref.std(unbiased=False) + 1e-4)
    assert torch.allclose(with_[:2], want.expand(2))  # beating the policy-free reference is rewarded
    assert float(with_[2]) == 0.0


def test_single_rollout_groups_give_zero_not_nan():
    a = group_advantages(torch.tensor([0.7]), torch.tensor([TOKEN]))
    assert torch.equal(a, torch.zeros(1))
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([TOKEN]))


def test_decision_logprobs_pick_the_right_column():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    d = torch.tensor([[True, False], [False, True]])
    lp = torch.log_softmax(logits, -1)
    want = torch.tensor([[lp[0, 1], lp[1, 0]], [lp[0, 0], lp[1, 1]]])
    assert torch.allclose(decision_logprobs(logits, d), want)


def test_clipped_surrogate_matches_ppo_with_asymmetric_clip():
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    old = torch.zeros(1, 3)
    pos, _ = clipped_surrogate(new, old, torch.tensor([2.0]), 0.2, 0.28)
    assert torch.allclose(pos, torch.tensor([[1.28 * 2, 0.5 * 2, 1.1 * 2]]))
    neg, clipped = clipped_surrogate(new, old, torch.tensor([-1.0]), 0.2, 0.28)
    assert torch.allclose(neg, torch.tensor([[-1.5, -0.8, -1.1]]))
    assert clipped.tolist() == [[False, True, False]]


def _memory(masks, frames, modes, adv):
    return Memory(
        torch.tensor(masks, dtype=torch.bool),
        torch.tensor(frames, dtype=torch.bool),
        torch.tensor(modes),
        torch.tensor(adv),
    )


def test_loss_by_hand_at_the_old_policy():
    """At θ = θ_old every ratio is 1, so L_tok = −mean_j A_j and L_frame = −mean_j A_j."""
    tok_logits = torch.randn(4, 2)
    fr_logits = torch.randn(2, 2)
    mem = _memory(
        [[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]],
        [[1, 1], [1, 0], [0, 1]],
        [TOKEN, TOKEN, FRAME],
        [1.0, -0.5, 2.0],
    )
    out = policy_loss(tok_logits, fr_logits, tok_logits, fr_logits, mem)
    assert math.isclose(float(out.token_loss), -(1.0 - 0.5) / 2, rel_tol=1e-6)
    assert math.isclose(float(out.frame_loss), -2.0, rel_tol=1e-6)
    assert math.isclose(float(out.loss), float(out.token_loss + out.frame_loss), rel_tol=1e-6)
    assert out.clip_fraction == 0.0


def test_balancing_weights_in_the_token_loss():
    """One rollout, 1 of 4 kept: the kept decision weighs 1 − 1/4, each dropped one 1/4."""
    old = torch.zeros(4, 2)
    new = old.clone()
    new[0, 1] = math.log(1.1 / 0.9)  # keep prob of token 0: 0.5 → 0.55 (ratio 1.1)
    mem = _memory([[1, 0, 0, 0]], [[1]], [TOKEN], [1.0])
    out = policy_loss(new, torch.zeros(1, 2), old, torch.zeros(1, 2), mem)
    ratio_keep = 0.55 / 0.5
    want = -(0.75 * ratio_keep + 3 * 0.25 * 1.0) / (0.75 + 3 * 0.25)
    assert math.isclose(float(out.token_loss), want, rel_tol=1e-5)


def test_gradient_raises_probability_of_rewarded_decisions():
    torch.manual_seed(0)
    logits = torch.zeros(6, 2, requires_grad=True)
    frame_logits = torch.zeros(3, 2, requires_grad=True)
    mem = _memory(
        [[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]],
        [[1, 0, 0], [0, 0, 1]],
        [TOKEN, FRAME],
        [1.0, -1.0],
    )
    out = policy_loss(logits, frame_logits, logits.detach(), frame_logits.detach(), mem)
    out.loss.backward()
    score_grad = logits.grad[:, 1] - logits.grad[:, 0]  # d loss / d (z_keep − z_drop), up to a factor
    assert bool((score_grad[:2] < 0).all())  # kept in a good rollout → keep score goes up
    assert bool((score_grad[2:] > 0).all())  # dropped in a good rollout → keep score goes down
    fgrad = frame_logits.grad[:, 1] - frame_logits.grad[:, 0]
    assert float(fgrad[2]) > 0 and float(fgrad[0]) < 0  # chosen in a bad rollout → less likely


def test_missing_modes_still_give_a_differentiable_zero():
    logits = torch.zeros(3, 2, requires_grad=True)
    fl = torch.zeros(2, 2, requires_grad=True)
    mem = _memory([[1, 0, 0]], [[1, 1]], [CONTENT], [0.0])
    out = policy_loss(logits, fl, logits.detach(), fl.detach(), mem)
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()
    assert logits.grad is not None


def test_kl_to_half_is_zero_at_uniform_and_positive_elsewhere():
    assert abs(float(bernoulli_kl_to_half(torch.zeros(5, 2)))) < 1e-7
    assert float(bernoulli_kl_to_half(torch.tensor([[0.0, 3.0]]))) > 0.1
    logits = torch.zeros(2, 2)
    mem = _memory([[1, 0]], [[1]], [TOKEN], [0.0])
    skewed = torch.tensor([[0.0, 4.0], [0.0, -4.0]])
    a = policy_loss(skewed, torch.zeros(1, 2), logits, torch.zeros(1, 2), mem, kl_coef=0.0)
    b = policy_loss(skewed, torch.zeros(1, 2), logits, torch.zeros(1, 2), mem, kl_coef=0.5)
    assert float(b.loss) > float(a.loss)


def test_memory_appends_and_validates_shapes():
    mem = Memory.empty(5, 2)
    mem = mem.append(
        torch.ones(3, 5, dtype=torch.bool),
        torch.ones(3, 2, dtype=torch.bool),
        torch.zeros(3, dtype=torch.long),
        torch.zeros(3),
    )
    assert len(mem) == 3
    with pytest.raises(ValueError, match="memory"):
        policy_loss(torch.zeros(4, 2), torch.zeros(2, 2), torch.zeros(4, 2), torch.zeros(2, 2), mem)


def test_dual_clip_bounds_negative_advantage_terms():
    """A huge ratio on a negative-advantage decision is floored at c·A; positive terms are untouched."""
    old = torch.zeros(1, 3)
    new = torch.tensor([[25.0, 0.1, -0.5]])  # ratio e^25 on the first decision
    plain, _ = clipped_surrogate(new, old, torch.tensor([-1.0]), 0.2, 0.28)
    assert plain[0, 0] < -1e8  # unbounded but for the e^20 guard: the term that blew up a run
    dual, flagged = clipped_surrogate(new, old, torch.tensor([-1.0]), 0.2, 0.28, dual_clip=3.0)
    assert dual[0, 0] == -3.0 and bool(flagged[0, 0])
    torch.testing.assert_close(dual[0, 1:], plain[0, 1:])
    pos_plain, _ = clipped_surrogate(new, old, torch.tensor([2.0]), 0.2, 0.28)
    pos_dual, _ = clipped_surrogate(new, old, torch.tensor([2.0]), 0.2, 0.28, dual_clip=3.0)
    torch.testing.assert_close(pos_dual, pos_plain)


def test_surrogate_gradient_stays_finite_for_extreme_ratios():
    """An inf ratio would turn the masked backward of minimum/where into NaN weights."""
    old = torch.zeros(1, 2)
    new = torch.tensor([[200.0, 0.1]], requires_grad=True)  # exp(200) overflows float32
    for adv in (-1.0, 2.0):
        surr, _ = clipped_surrogate(new, old, torch.tensor([adv]), 0.2, 0.28, dual_clip=3.0)
        (grad,) = torch.autograd.grad(surr.sum(), new)
        assert torch.isfinite(surr).all() and torch.isfinite(grad).all()


def test_surrogate_weighs_a_token_it_already_keeps_by_kbar():
    # The balancing weights in action. Tokens 0 and 1 are both kept by the good rollout only; the
    # policy already keeps token 0 (s = +12) and drops token 1 (s = −12). What carries the gradient
    # is the decision against the policy's belief, and the weights count it fully only for a token
    # the policy drops: the surrogate pushes token 0 k̄/(1 − k̄) = 1/3 as hard as token 1 (k̄ = 2/8).
    mem = _memory(
        [[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0]], [[1]] * 2, [TOKEN, TOKEN], [1.0, -1.0]
    )
    logits = torch.zeros(8, 2)
    logits[0, 1], logits[1, 1] = 12.0, -12.0
    logits.requires_grad_(True)
    fl = torch.zeros(1, 2)
    policy_loss(logits, fl, logits.detach(), fl, mem).loss.backward()
    g = logits.grad[:, 1] - logits.grad[:, 0]
    top, bottom = float(-g[0]), float(-g[1])
    assert top > 0 and bottom > 0 and math.isclose(top / bottom, 1 / 3, rel_tol=1e-3)
