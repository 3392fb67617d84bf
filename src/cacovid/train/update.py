"""One item's worth of CaCoVID updates (docs/method.md §4 steps 1–6 and §4.3), independent of any model.

`PolicyUpdater.train_prompt(prompt, score_masks)` scores the prompt once with the current policy (the
"old" scores), then for I iterations draws G fresh rollouts from those old scores, asks `score_masks`
for their rewards (the trainer makes that one batched call to the frozen video LLM), appends them to
the item's memory and takes one optimiser step on the whole memory. The training retention r adapts
after every iteration. Advantages are normalised within each iteration's group of G rollouts (r, and
so the kept count, may differ between iterations) and stored in the memory with the rollouts.
Keeping this free of adapters lets tests drive it with synthetic rewards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cacovid.policy.network import CaCoVIDPolicy
from cacovid.train.config import TrainConfig
from cacovid.train.objective import Memory, group_advantages, policy_loss
from cacovid.train.sampling import CONTENT, FRAME, TOKEN, content_scores, sample_rollouts
from cacovid.train.schedule import make_optimizer, make_scheduler
from cacovid.types import EncodedPrompt

ScoreMasks = Callable[[Tensor], Tensor]  # (G, N) bool keep masks → (G,) rewards


class PolicyUpdater:
    """Optimiser, schedule, RNG and adaptive retention of one training run."""

    def __init__(self, policy: CaCoVIDPolicy, config: TrainConfig, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.policy = policy
        self.config = config
        self.sampling = config.sampling()
        self.total_steps = int(total_steps)
        self.optimizer = make_optimizer(policy, config.lr, config.layer_lr_scale, config.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer, self.total_steps, config.warmup_fraction, config.min_lr_scale
        )
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.ratio = float(config.ratio)
        self.step = 0

    # ---- adaptive retention (§4.3) -----------------------------------------------------------
    def adapt_ratio(self, token_reward_mean: float) -> None:
        """Halve r after an easy iteration, double it after a hard one, within the bounds."""
        c = self.config
        if not c.adapt_ratio:
            return
        if token_reward_mean >= c.adapt_high:
            self.ratio = max(c.ratio_min, self.ratio / 2)
        elif token_reward_mean <= c.adapt_low:
            self.ratio = min(c.ratio_max, self.ratio * 2)

    # ---- one item ----------------------------------------------------------------------------
    def train_prompt(self, prompt: EncodedPrompt, score_masks: ScoreMasks) -> dict[str, Any]:
        """I iterations of sample → reward → one optimiser step on the memory. Returns item metrics."""
        c = self.config
        T, P, N = prompt.num_frames, prompt.tokens_per_frame, prompt.num_video_tokens
        self.policy.train()
        with torch.no_grad():
            old = self.policy(prompt).detach()
        s_old = old.token_scores.reshape(T, P).cpu()
        u_old = old.frame_scores.cpu()
        feats = prompt.frame_features().detach().float().cpu()
        cached = content_scores(feats, self.sampling.dpc_neighbors) if self.sampling.content_rollout else None
        dev = old.token_logits.device
        memory = Memory.empty(N, T, device=dev)
        rewards_all, modes_all, ratios, losses, clip_fracs, top = [], [], [], [], [], []
        recall = []
        for _ in range(c.iterations):
            ro = sample_rollouts(
                s_old, u_old, feats, self.ratio, self.sampling, self.generator, content=cached
            )
            rewards = score_masks(ro.masks).detach().float().cpu().reshape(-1)
            if rewards.shape != (ro.masks.shape[0],):
                raise ValueError(
                    f"reward function returned {tuple(rewards.shape)} for {ro.masks.shape[0]} rollouts"
                )
            if not bool(torch.isfinite(rewards).all()):
                raise ValueError("reward function returned NaN or inf")
            adv = group_advantages(
                rewards, ro.modes, content_baseline=c.content_baseline, eps=c.advantage_eps
            )
            memory = memory.append(ro.masks, ro.frames, ro.modes, adv)
            out = self.policy(prompt)
            lo = policy_loss(
                out.token_logits,
                out.frame_logits,
                old.token_logits,
                old.frame_logits,
                memory,
                clip_low=c.clip_low,
                clip_high=c.clip_high,
                kl_coef=c.kl_coef,
                dual_clip=c.dual_clip,
            )
            if not bool(torch.isfinite(lo.loss)):
                raise FloatingPointError(
                    f"policy loss is {float(lo.loss)} (lower the learning rate or keep "
                    "dual_clip set); the policy was not updated"
                )
            self.optimizer.zero_grad(set_to_none=True)
            lo.loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(
                self.policy.parameters(), c.grad_clip if c.grad_clip > 0 else float("inf")
            )
            if not bool(torch.isfinite(norm)):
                raise FloatingPointError(f"policy gradient norm is {float(norm)}; the policy was not updated")
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            tok_mask = ro.modes == TOKEN
            self.adapt_ratio(float(rewards[tok_mask].mean()) if bool(tok_mask.any()) else 1.0)
            rewards_all.append(rewards)
            modes_all.append(ro.modes)
            ratios.append(ro.ratio)
            losses.append(float(lo.loss.detach()))
            clip_fracs.append(lo.clip_fraction)
            top.append(float(rewards[0]))
            if prompt.evidence_mask is not None and bool(prompt.evidence_mask.any()):
                ev = prompt.evidence_mask.to(ro.masks.device)
                recall.append(float((ro.masks[0] & ev).sum()) / float(ev.sum()))
        r, m = torch.cat(rewards_all), torch.cat(modes_all)
        stats: dict[str, Any] = {
            "reward": float(r.mean()),
            "reward_top": sum(top) / len(top),
            "ratio": sum(ratios) / len(ratios),
            "ratio_next": self.ratio,
            "loss": sum(losses) / len(losses),
            "clip_fraction": sum(clip_fracs) / len(clip_fracs),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "step": self.step,
            # Spread of the item's old token scores: tens or more means the Bernoulli decisions are
            # saturated and the surrogate has stopped refining the ranking (see --kl-coef).
            "score_std": float(s_old.float().std()),
        }
        for name, mode in (("token", TOKEN), ("frame", FRAME), ("content", CONTENT)):
            if bool((m == mode).any()):
                stats[f"reward_{name}"] = float(r[m == mode].mean())
        if recall:
            stats["evidence_recall_top"] = sum(recall) / len(recall)
        return stats

    # ---- exact resume ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "ratio": self.ratio,
            "step": self.step,
            "total_steps": self.total_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["total_steps"]) != self.total_steps:
            raise ValueError(
                f"checkpoint was made for {state['total_steps']} optimiser steps, this run has "
                f"{self.total_steps} (different data or iterations?)"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.ratio = float(state["ratio"])
        self.step = int(state["step"])
