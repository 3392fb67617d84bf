"""The clipped policy objective (docs/method.md §4 steps 4–5).

Each rollout is a set of independent Bernoulli decisions: keep/drop per token (token mode) or
chosen/not per frame (frame mode). Their log-probabilities under the current policy, against the old
policy that drew them, form a PPO-style clipped surrogate weighted by the rollout's group-normalised
advantage. Token decisions are balanced (kept tokens weigh 1 − k̄, dropped ones k̄) so a handful of
keep decisions is not drowned by thousands of drops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from cacovid.train.sampling import CONTENT, FRAME, TOKEN, LogProb

if TYPE_CHECKING:
    from cacovid.train.config import TrainConfig


def group_advantages(
    rewards: Tensor, modes: Tensor, *, content_baseline: bool = True, eps: float = 1e-4
) -> Tensor:
    """(G,) advantages A_j = (R_j − mean R)/(std R + eps), separately for token and frame mode.

    With `content_baseline`, the content-mode reward joins each group's mean and std (a policy-free
    reference point). Content rollouts themselves get advantage 0. std is the population std, so a
    group of one gets A = 0 rather than NaN.
    """
    if rewards.dim() != 1 or modes.shape != rewards.shape:
        raise ValueError(
            "rewards and modes must be (G,) of equal length, got "
            f"{tuple(rewards.shape)}, {tuple(modes.shape)}"
        )
    r = rewards.double()
    adv = torch.zeros_like(r)
    content = modes == CONTENT
    for mode in (TOKEN, FRAME):
        member = modes == mode
        if not bool(member.any()):
            continue
        pool = member | content if content_baseline else member
        ref = r[pool]
        mean, std = ref.mean(), ref.std(unbiased=False)
        adv[member] = (r[member] - mean) / (std + eps)
    return adv.float()


Advantages = Callable[[Tensor, Tensor, "TrainConfig"], Tensor]


def group_std_advantages(rewards: Tensor, modes: Tensor, config: TrainConfig) -> Tensor:
    """docs/method.md §4 step 4: `group_advantages` with the config's content baseline and ε."""
    return group_advantages(
        rewards, modes, content_baseline=config.content_baseline, eps=config.advantage_eps
    )


def leave_one_out_advantages(rewards: Tensor, modes: Tensor, config: TrainConfig) -> Tensor:
    """(G,) A_j = R_j − mean of the other rollouts' rewards, per mode, on the reward's own scale.

    No division by the group's spread: a group whose rewards hardly differ gets advantages near 0
    instead of ±1 (what the std normalisation gives a near-flat dense-reward group), so the gradient
    follows how much a rollout's reward differs, not only its rank. Content rollouts get 0.
    """
    if rewards.dim() != 1 or modes.shape != rewards.shape:
        raise ValueError(
            f"rewards and modes must be (G,) of equal length, got {tuple(rewards.shape)}, "
            f"{tuple(modes.shape)}"
        )
    r = rewards.double()
    adv = torch.zeros_like(r)
    for mode in (TOKEN, FRAME):
        member = modes == mode
        n = int(member.sum())
        if n >= 2:
            adv[member] = r[member] - (r[member].sum() - r[member]) / (n - 1)
    return adv.float()


# Advantage estimators by name (`TrainConfig.advantage`): (rewards (G,), modes (G,), config) → (G,).
ADVANTAGES: dict[str, Advantages] = {
    "group": group_std_advantages,
    "leave_one_out": leave_one_out_advantages,
}


def decision_logprobs(logits: Tensor, decisions: Tensor) -> Tensor:
    """(R, M) log π(decision) for R rollouts of M binary decisions, from (M, 2) (drop, keep) logits."""
    lp = torch.log_softmax(logits.float(), dim=-1)  # (M, 2)
    return torch.where(decisions, lp[:, 1].unsqueeze(0), lp[:, 0].unsqueeze(0))


def clipped_surrogate(
    logp_new: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """(R, M) per-decision min(ρA, clip(ρ, 1−low, 1+high)A) and a (R, M) bool "was clipped" flag.

    With `dual_clip` c, a negative-advantage term is floored at c·A (dual-clip PPO): the plain
    surrogate is unbounded there, and with per-item memory an old rollout's per-decision ratio was
    measured at ~1e10 after a few fast updates, giving a loss of 1e10 and then NaN weights.
    """
    # The clamp changes no gradient that matters (beyond e^±20 every term is clipped or ~0) but keeps
    # exp() finite: an inf ratio turns the masked backward of minimum/where into NaN weights.
    ratio = torch.exp((logp_new - logp_old).clamp(-20.0, 20.0))
    a = adv.float().unsqueeze(1)
    unclipped = ratio * a
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * a
    surr = torch.minimum(unclipped, clipped)
    was_clipped = clipped < unclipped
    if dual_clip is not None:
        floor = dual_clip * a
        dual = (a < 0) & (surr < floor)
        surr = torch.where(dual, floor, surr)
        was_clipped = was_clipped | dual
    return surr, was_clipped.detach()


@dataclass
class Memory:
    """An item's rollouts so far: masks (R, N) bool, frames (R, T) bool, modes (R,), advantages (R,);
    `orders`: each appended group's draw order (G_i, K_i), for samplers with exact log-probabilities."""

    masks: Tensor
    frames: Tensor
    modes: Tensor
    advantages: Tensor
    orders: tuple[Tensor, ...] = field(default=())

    @classmethod
    def empty(cls, n_tokens: int, n_frames: int, device: torch.device | str = "cpu") -> Memory:
        return cls(
            torch.zeros(0, n_tokens, dtype=torch.bool, device=device),
            torch.zeros(0, n_frames, dtype=torch.bool, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
            torch.zeros(0, dtype=torch.float32, device=device),
        )

    def append(
        self, masks: Tensor, frames: Tensor, modes: Tensor, advantages: Tensor, order: Tensor | None = None
    ) -> Memory:
        dev = self.masks.device
        return Memory(
            torch.cat([self.masks, masks.to(dev)]),
            torch.cat([self.frames, frames.to(dev)]),
            torch.cat([self.modes, modes.to(dev)]),
            torch.cat([self.advantages, advantages.float().to(dev)]),
            self.orders if order is None else (*self.orders, order.to(dev)),
        )

    def __len__(self) -> int:
        return self.modes.numel()


@dataclass
class LossOutput:
    loss: Tensor
    token_loss: Tensor
    frame_loss: Tensor
    kl: Tensor
    clip_fraction: float


def policy_loss(
    token_logits: Tensor,
    frame_logits: Tensor,
    old_token_logits: Tensor,
    old_frame_logits: Tensor,
    memory: Memory,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    kl_coef: float = 0.0,
    dual_clip: float | None = None,
) -> LossOutput:
    """L = L_tok + L_frame (+ kl_coef · KL(π ‖ Bernoulli(0.5))) on the whole memory.

    `token_logits` (N, 2) and `frame_logits` (T, 2) carry gradients; the old ones are the item's
    scores before its first update. L_tok = −mean_j Σ_i w_ij·surr_ij / Σ_i w_ij over token-mode
    rollouts; L_frame = −mean over frame-mode rollouts and frames of surr.

    Two variants of L_tok were measured on the toy and dropped: adding the token decisions of
    frame-mode rollouts (with their frame-group advantage), and a per-token contribution objective
    −Σ_i c_i·s_i / T, c_i the mean advantage of the rollouts that kept token i minus that of those that
    dropped it. Neither lifted the global top-K recall or accuracy, and the contribution objective has
    no optimum at finite scores (docs/experiments.md, "What did not move the global top-K recall" and
    "Per-token contribution objective and boundary rollouts").
    """
    N, T = token_logits.shape[0], frame_logits.shape[0]
    if memory.masks.shape[1:] != (N,) or memory.frames.shape[1:] != (T,):
        raise ValueError(
            f"memory shapes {tuple(memory.masks.shape)}, {tuple(memory.frames.shape)} do not fit "
            f"N={N} tokens and T={T} frames"
        )
    zero = token_logits.sum() * 0.0 + frame_logits.sum() * 0.0  # keeps the graph when a mode is absent
    clipped_count, decisions = 0.0, 0
    tok = memory.modes == TOKEN
    token_loss = zero
    if bool(tok.any()):
        m = memory.masks[tok]
        new = decision_logprobs(token_logits, m)
        old = decision_logprobs(old_token_logits.detach(), m)
        surr, was_clipped = clipped_surrogate(
            new, old, memory.advantages[tok], clip_low, clip_high, dual_clip
        )
        kbar = m.float().mean(1, keepdim=True)
        w = torch.where(m, 1.0 - kbar, kbar)
        per_rollout = (w * surr).sum(1) / w.sum(1).clamp_min(1e-12)
        token_loss = -per_rollout.mean()
        clipped_count += float(was_clipped.sum())
        decisions += was_clipped.numel()
    fr = memory.modes == FRAME
    frame_loss = zero
    if bool(fr.any()):
        f = memory.frames[fr]
        new = decision_logprobs(frame_logits, f)
        old = decision_logprobs(old_frame_logits.detach(), f)
        surr, was_clipped = clipped_surrogate(new, old, memory.advantages[fr], clip_low, clip_high, dual_clip)
        frame_loss = -surr.mean()
        clipped_count += float(was_clipped.sum())
        decisions += was_clipped.numel()
    kl = zero
    if kl_coef:
        kl = bernoulli_kl_to_half(token_logits) + bernoulli_kl_to_half(frame_logits)
    loss = token_loss + frame_loss + kl_coef * kl
    return LossOutput(loss, token_loss, frame_loss, kl, clipped_count / max(decisions, 1))


def bernoulli_kl_to_half(logits: Tensor) -> Tensor:
    """Mean over decisions of KL(π ‖ Bernoulli(0.5)) = Σ_a π_a log π_a + log 2, from (M, 2) logits."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return (lp.exp() * lp).sum(-1).mean() + torch.log(torch.tensor(2.0))


def exact_policy_loss(
    token_scores: Tensor,
    old_token_scores: Tensor,
    memory: Memory,
    log_prob: LogProb,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = None,
) -> LossOutput:
    """Clipped surrogate on the exact log-probability of each drawn rollout (docs/method.md §6).

    For samplers whose `log_prob` is the probability of the draws they make (`Sampler.log_prob`), the
    policy gradient needs no per-token surrogate: ρ_j = exp((log π(o_j) − log π_old(o_j)) / K_j), one
    ratio per rollout, its log averaged over the K_j drawn tokens so that clipping acts on a per-token
    scale; L = −mean_j min(ρ_j A_j, clip(ρ_j) A_j). On fresh rollouts (ρ = 1) its gradient is the
    REINFORCE estimate −mean_j A_j ∇log π(o_j) / K_j. `token_scores` (N,) carries gradients.
    """
    if not memory.orders:
        raise ValueError("the exact objective needs the rollouts' draw orders (Rollouts.order)")
    new, old, size = [], [], []
    for order in memory.orders:
        new.append(log_prob(token_scores, order))
        old.append(log_prob(old_token_scores.detach(), order))
        size.append(torch.full((order.shape[0],), float(order.shape[1]), device=order.device))
    per_token = torch.cat(size).to(token_scores.device)
    logp_new = (torch.cat(new) / per_token).unsqueeze(1)
    logp_old = (torch.cat(old) / per_token).unsqueeze(1)
    if logp_new.shape[0] != memory.advantages.shape[0]:
        raise ValueError(f"{logp_new.shape[0]} draw orders for {memory.advantages.shape[0]} advantages")
    surr, was_clipped = clipped_surrogate(
        logp_new, logp_old, memory.advantages, clip_low, clip_high, dual_clip
    )
    loss = -surr.mean()
    zero = loss * 0.0
    return LossOutput(loss, loss, zero, zero, float(was_clipped.float().mean()))
