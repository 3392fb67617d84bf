"""One item's worth of CaCoVID updates (docs/method.md §4 steps 1–6 and §4.3), independent of any model.

`PolicyUpdater.train_prompt(prompt, score_masks)` scores the prompt once with the current policy (the
"old" scores), then for I iterations draws G fresh rollouts from those old scores, asks `score_masks`
for their rewards (the trainer makes that one batched call to the frozen video LLM), appends them to
the item's memory and takes one optimiser step on the whole memory. The training retention r adapts
after every iteration. Advantages are normalised within each iteration's group of G rollouts (r, and
so the kept count, may differ between iterations) and stored in the memory with the rollouts.
Keeping this free of adapters lets tests drive it with synthetic rewards.

Several processes (docs/scale-out.md): each trains its own item of a round, and before every
optimiser step the gradients are averaged over the processes that contributed one (all-reduce), so
every process takes the same step and keeps the same weights; the adaptive retention r follows the
mean token-mode reward of the round. A process whose item fails, or that has none (`join_round`),
still takes part in every all-reduce, contributing nothing. With one process nothing is reduced and
a failure raises at once, as it always has.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cacovid.distributed import SINGLE, Processes
from cacovid.policy.network import CaCoVIDPolicy
from cacovid.train.config import TrainConfig
from cacovid.train.objective import Memory, group_advantages, policy_loss
from cacovid.train.sampling import CONTENT, FRAME, TOKEN, content_scores, sample_rollouts
from cacovid.train.schedule import make_optimizer, make_scheduler
from cacovid.types import EncodedPrompt

ScoreMasks = Callable[[Tensor], Tensor]  # (G, N) bool keep masks → (G,) rewards


class PolicyUpdater:
    """Optimiser, schedule, RNG and adaptive retention of one training run."""

    def __init__(
        self,
        policy: CaCoVIDPolicy,
        config: TrainConfig,
        total_steps: int,
        *,
        processes: Processes = SINGLE,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.policy = policy
        self.config = config
        self.processes = processes
        self.sampling = config.sampling()
        self.total_steps = int(total_steps)
        self.optimizer = make_optimizer(policy, config.lr, config.layer_lr_scale, config.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer, self.total_steps, config.warmup_fraction, config.min_lr_scale
        )
        self.generator = torch.Generator().manual_seed(rollout_seed(int(config.seed), processes.rank))
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
        return self._iterate(prompt, score_masks)

    def join_round(self) -> None:
        """Take part in a round's I optimiser steps without an item of one's own (a short final round,
        or an item that could not be encoded): every all-reduce is joined, nothing is contributed.
        With one process this does nothing."""
        self._iterate(None, None)

    def _iterate(self, prompt: EncodedPrompt | None, score_masks: ScoreMasks | None) -> dict[str, Any]:
        c = self.config
        failure: BaseException | None = None
        if prompt is not None:
            T, P, N = prompt.num_frames, prompt.tokens_per_frame, prompt.num_video_tokens
            self.policy.train()
            try:
                with torch.no_grad():
                    old = self.policy(prompt).detach()
            except (ValueError, RuntimeError, FloatingPointError) as exc:
                if not self.processes.distributed:
                    raise
                failure = exc
            else:
                s_old = old.token_scores.reshape(T, P).cpu()
                u_old = old.frame_scores.cpu()
                feats = prompt.frame_features().detach().float().cpu()
                sampling = self.sampling
                cached = content_scores(feats, sampling.dpc_neighbors) if sampling.content_rollout else None
                dev = old.token_logits.device
                memory = Memory.empty(N, T, device=dev)
        rewards_all, modes_all, ratios, losses, clip_fracs, top = [], [], [], [], [], []
        recall = []
        for _ in range(c.iterations):
            contributed, token_mean = False, 1.0
            if prompt is not None and failure is None:
                try:
                    ro = sample_rollouts(
                        s_old, u_old, feats, self.ratio, self.sampling, self.generator, content=cached
                    )
                    rewards = score_masks(ro.masks).detach().float().cpu().reshape(-1)
                    if rewards.shape != (ro.masks.shape[0],):
                        raise ValueError(
                            f"reward function returned {tuple(rewards.shape)} for "
                            f"{ro.masks.shape[0]} rollouts"
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
                except (ValueError, RuntimeError, FloatingPointError) as exc:
                    if not self.processes.distributed:
                        raise
                    failure = exc
                else:
                    contributed = True
                    tok_mask = ro.modes == TOKEN
                    token_mean = float(rewards[tok_mask].mean()) if bool(tok_mask.any()) else 1.0
            if not contributed:
                self.optimizer.zero_grad(set_to_none=True)
            n_contributing, token_mean = self._average_gradients(contributed, token_mean)
            if n_contributing == 0:
                break  # no process has an item left in this round: there is nothing to step on
            norm = torch.nn.utils.clip_grad_norm_(
                self.policy.parameters(), c.grad_clip if c.grad_clip > 0 else float("inf")
            )
            if not bool(torch.isfinite(norm)):
                raise FloatingPointError(f"policy gradient norm is {float(norm)}; the policy was not updated")
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self.adapt_ratio(token_mean)
            if not contributed:
                continue
            rewards_all.append(rewards)
            modes_all.append(ro.modes)
            ratios.append(ro.ratio)
            losses.append(float(lo.loss.detach()))
            clip_fracs.append(lo.clip_fraction)
            top.append(float(rewards[0]))
            if prompt.evidence_mask is not None and bool(prompt.evidence_mask.any()):
                ev = prompt.evidence_mask.to(ro.masks.device)
                recall.append(float((ro.masks[0] & ev).sum()) / float(ev.sum()))
        if failure is not None:
            raise failure
        if prompt is None:
            return {}
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

    # ---- several processes -------------------------------------------------------------------
    def _average_gradients(self, contributed: bool, token_mean: float) -> tuple[int, float]:
        """Average the gradients (and the token-mode reward) over the processes that contributed.

        One all-reduce of a flat float32 buffer: every gradient, a has-gradient flag per parameter
        (a parameter no process has a gradient for keeps `grad=None`, so AdamW skips it as it does
        with one process), the number of contributing processes and their summed token reward.
        Returns (contributing processes, their mean token reward). One process: nothing moves.
        """
        if not self.processes.distributed:
            return int(contributed), token_mean
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        buf = torch.zeros(total + len(params) + 2, dtype=torch.float32, device=params[0].device)
        if contributed:
            offset = 0
            for i, (p, n) in enumerate(zip(params, sizes, strict=True)):
                if p.grad is not None:
                    buf[offset : offset + n] = p.grad.detach().reshape(-1).float()
                    buf[total + i] = 1.0
                offset += n
            buf[-2], buf[-1] = 1.0, float(token_mean)
        self.processes.all_reduce_sum_(buf)
        n = int(round(float(buf[-2])))
        if n == 0:
            return 0, 1.0
        offset = 0
        for i, (p, size) in enumerate(zip(params, sizes, strict=True)):
            if float(buf[total + i]) > 0:
                p.grad = (buf[offset : offset + size] / n).reshape(p.shape).to(p.dtype).clone()
            else:
                p.grad = None
            offset += size
        return n, float(buf[-1]) / n

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


def rollout_seed(seed: int, rank: int) -> int:
    """The rollout generator's seed of process `rank`: `seed` itself for process 0 (so one process
    draws what it always drew), a different stream for every other process."""
    if rank == 0:
        return int(seed)
    return zlib.crc32(f"{int(seed)}|rank {int(rank)}".encode())
