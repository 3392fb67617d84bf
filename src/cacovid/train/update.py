"""The policy update of one round of items (docs/method.md §4 steps 1–6 and §4.3), independent of any model.

`PolicyUpdater.train_round(jobs)` scores each of this process's items once with the current policy
(the "old" scores), then for I iterations: every item draws G fresh rollouts from its old scores,
asks its `score_masks` for their rewards (the trainer makes that one batched call to the frozen video
LLM), appends them with their advantages to the item's memory and adds the gradient of its loss on
the whole memory; then one optimiser step on the summed gradients, and the training retention r
adapts. Keeping this free of adapters lets tests drive it with synthetic rewards.

Several processes (docs/scale-out.md): each trains its own items of a round, and before every
optimiser step the gradients are summed over all processes and divided by the number of items that
contributed one (one all-reduce), so every process takes the same step and keeps the same weights; r
follows the success of all the round's items. An item that fails (a bad reward, a non-finite loss) is
recorded and drops out of the round; a process with no item left still joins every all-reduce.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cacovid.distributed import SINGLE, Processes
from cacovid.policy.network import CaCoVIDPolicy, PolicyOutput
from cacovid.train.config import TrainConfig
from cacovid.train.objective import ADVANTAGES, LossOutput, Memory, exact_policy_loss, policy_loss
from cacovid.train.sampling import CONTENT, FRAME, SAMPLERS, TOKEN, Rollouts, content_scores, sample_rollouts
from cacovid.train.schedule import make_optimizer, make_scheduler
from cacovid.types import EncodedPrompt

ScoreMasks = Callable[[Tensor], Tensor]  # (G, N) bool keep masks → (G,) rewards
ITEM_ERRORS = (ValueError, RuntimeError, FloatingPointError)


def _identity(rewards: Tensor) -> Tensor:
    return rewards


@dataclass
class ItemJob:
    """One item of a round: its encoded prompt, the call that scores its rollouts, how its rewards
    read as a probability of a correct answer (`success`) and that probability by guessing (`chance`)."""

    prompt: EncodedPrompt
    score_masks: ScoreMasks
    success: Callable[[Tensor], Tensor] = _identity
    chance: float = 0.0


@dataclass
class _Item:
    """An item's state during its round: old scores, memory, per-iteration records, or its failure."""

    job: ItemJob
    old: PolicyOutput | None = None
    token_scores: Tensor | None = None  # (T, P) old scores
    frame_scores: Tensor | None = None  # (T,)
    features: Tensor | None = None  # (T, P, D)
    content: Tensor | None = None  # (T, P) cached content-mode scores
    memory: Memory | None = None
    failure: BaseException | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


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
        self.total_steps = int(total_steps)
        self.optimizer = make_optimizer(policy, config.lr, config.layer_lr_scale, config.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer, self.total_steps, config.warmup_fraction, config.min_lr_scale
        )
        self.generator = torch.Generator().manual_seed(rollout_seed(int(config.seed), processes.rank))
        self.ratio = float(config.ratio)
        self.success_signal: float | None = None
        self.step = 0

    # ---- adaptive retention (§4.3) -----------------------------------------------------------
    def adapt_ratio(self, success: float) -> None:
        """Lower r after a step whose (smoothed) success reached `adapt_high`, raise it after one at or
        below `adapt_low`, by `adapt_factor`, within the bounds."""
        c = self.config
        if not c.adapt_ratio:
            return
        if self.success_signal is None or c.adapt_smoothing == 0:
            self.success_signal = success
        else:
            self.success_signal = c.adapt_smoothing * self.success_signal + (1 - c.adapt_smoothing) * success
        if self.success_signal >= c.adapt_high:
            self.ratio = max(c.ratio_min, self.ratio / c.adapt_factor)
        elif self.success_signal <= c.adapt_low:
            self.ratio = min(c.ratio_max, self.ratio * c.adapt_factor)

    def item_success(self, job: ItemJob, rewards: Tensor, modes: Tensor) -> float:
        """The item's success signal: mean p(correct) of its token-mode rollouts (1 without any), as
        the lift above chance with `adapt_vs_chance`."""
        token = modes == TOKEN
        p = float(job.success(rewards)[token].mean()) if bool(token.any()) else 1.0
        if self.config.adapt_vs_chance and job.chance < 1:
            p = (p - job.chance) / (1 - job.chance)
        return p

    # ---- one round ---------------------------------------------------------------------------
    def train_prompt(self, prompt: EncodedPrompt, score_masks: ScoreMasks) -> dict[str, Any]:
        """One item alone: I iterations of sample → reward → step. Returns its metrics or raises."""
        (result,) = self.train_round([ItemJob(prompt, score_masks)])
        if isinstance(result, BaseException):
            raise result
        return result

    def train_round(self, jobs: Sequence[ItemJob]) -> list[dict[str, Any] | BaseException]:
        """I optimiser steps on this process's items of a round (none: it joins every all-reduce).

        Returns, per job, its metrics, or the exception that made it drop out of the round.
        """
        c, sampler = self.config, SAMPLERS[self.config.sampler]
        items = [self._begin(job) for job in jobs]
        for _ in range(c.iterations):
            self.optimizer.zero_grad(set_to_none=True)
            success = []
            for item in (i for i in items if i.failure is None):
                try:
                    # 1. sample rollouts from the item's old scores
                    rollouts = sample_rollouts(
                        item.token_scores, item.frame_scores, item.features, self.ratio, c,
                        self.generator, content=item.content,
                    )  # fmt: skip
                    # 2. rewards of all G rollouts, one batched host call
                    rewards = _checked(item.job.score_masks(rollouts.masks), rollouts)
                    # 3. advantages, stored with the rollouts in the item's memory
                    advantages = ADVANTAGES[c.advantage](rewards, rollouts.modes, c)
                    item.memory = item.memory.append(
                        rollouts.masks, rollouts.frames, rollouts.modes, advantages, rollouts.order
                    )
                    # 4. loss on the whole memory; its gradient adds to the round's
                    loss = self._memory_loss(item, sampler.log_prob)
                    loss.loss.backward()
                except ITEM_ERRORS as exc:
                    item.failure = exc
                    continue
                success.append(self.item_success(item.job, rewards, rollouts.modes))
                item.records.append(_record(item, rollouts, rewards, loss))
            # 5. reduce over items and processes, clip, step, adapt r
            if not self._step(success):
                break
        return [self._result(item) for item in items]

    def _begin(self, job: ItemJob) -> _Item:
        """An item's old scores (no gradient) and empty memory; a failure is recorded, not raised."""
        item = _Item(job)
        prompt = job.prompt
        T, P = prompt.num_frames, prompt.tokens_per_frame
        self.policy.train()
        try:
            with torch.no_grad():
                item.old = self.policy(prompt).detach()
        except ITEM_ERRORS as exc:
            item.failure = exc
            return item
        item.token_scores = item.old.token_scores.reshape(T, P).cpu()
        item.frame_scores = item.old.frame_scores.cpu()
        item.features = prompt.frame_features().detach().float().cpu()
        if SAMPLERS[self.config.sampler].modes and self.config.content_rollout:
            item.content = content_scores(item.features, self.config.dpc_neighbors)
        item.memory = Memory.empty(prompt.num_video_tokens, T, device=item.old.token_logits.device)
        return item

    def _memory_loss(self, item: _Item, log_prob) -> LossOutput:
        """The item's loss on its memory under the current policy: the exact-probability surrogate for
        samplers that have one, the per-decision Bernoulli surrogate otherwise."""
        c = self.config
        out = self.policy(item.job.prompt)
        clip = dict(clip_low=c.clip_low, clip_high=c.clip_high, dual_clip=c.dual_clip)
        if log_prob is not None:
            loss = exact_policy_loss(out.token_scores, item.old.token_scores, item.memory, log_prob, **clip)
        else:
            loss = policy_loss(
                out.token_logits, out.frame_logits, item.old.token_logits, item.old.frame_logits,
                item.memory, kl_coef=c.kl_coef, **clip,
            )  # fmt: skip
        if not bool(torch.isfinite(loss.loss)):
            raise FloatingPointError(
                f"policy loss is {float(loss.loss)} (lower the learning rate or keep dual_clip set); "
                "the policy was not updated"
            )
        return loss

    def _step(self, success: list[float]) -> bool:
        """Average the round's gradients, clip, step, adapt r. False when no item anywhere contributed."""
        n_items, mean_success = self._average_gradients(len(success), sum(success))
        if n_items == 0:
            return False  # no process has an item left in this round: there is nothing to step on
        c = self.config
        norm = torch.nn.utils.clip_grad_norm_(
            self.policy.parameters(), c.grad_clip if c.grad_clip > 0 else float("inf")
        )
        if not bool(torch.isfinite(norm)):
            raise FloatingPointError(f"policy gradient norm is {float(norm)}; the policy was not updated")
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.adapt_ratio(mean_success)
        return True

    def _result(self, item: _Item) -> dict[str, Any] | BaseException:
        """An item's metrics over its iterations (docs/result-files.md, `log.jsonl`), or its failure."""
        if item.failure is not None:
            return item.failure
        rec = item.records
        rewards, modes = torch.cat([r["rewards"] for r in rec]), torch.cat([r["modes"] for r in rec])
        stats: dict[str, Any] = {
            "reward": float(rewards.mean()),
            "reward_top": sum(r["top"] for r in rec) / len(rec),
            "ratio": sum(r["ratio"] for r in rec) / len(rec),
            "ratio_next": self.ratio,
            "loss": sum(r["loss"] for r in rec) / len(rec),
            "clip_fraction": sum(r["clip_fraction"] for r in rec) / len(rec),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "step": self.step,
            # Spread of the item's old token scores: tens or more means the Bernoulli decisions are
            # saturated and the surrogate has stopped refining the ranking (see kl_coef).
            "score_std": float(item.token_scores.float().std()),
        }
        for name, mode in (("token", TOKEN), ("frame", FRAME), ("content", CONTENT)):
            if bool((modes == mode).any()):
                stats[f"reward_{name}"] = float(rewards[modes == mode].mean())
        recall = [r["recall"] for r in rec if r["recall"] is not None]
        if recall:
            stats["evidence_recall_top"] = sum(recall) / len(recall)
        return stats

    # ---- several processes -------------------------------------------------------------------
    def _average_gradients(self, n_local: int, success_sum: float) -> tuple[int, float]:
        """Divide the summed gradients by the number of contributing items, over all processes.

        One all-reduce of a flat float32 buffer: every gradient, a has-gradient flag per parameter
        (a parameter no process has a gradient for keeps `grad=None`, so AdamW skips it as it does
        with one process), the number of contributing items and their summed success signal.
        Returns (contributing items, their mean success).
        """
        if not self.processes.distributed:
            if n_local > 1:
                for p in self.policy.parameters():
                    if p.grad is not None:
                        p.grad.div_(n_local)
            return n_local, (success_sum / n_local if n_local else 1.0)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        buf = torch.zeros(total + len(params) + 2, dtype=torch.float32, device=params[0].device)
        if n_local:
            offset = 0
            for i, (p, n) in enumerate(zip(params, sizes, strict=True)):
                if p.grad is not None:
                    buf[offset : offset + n] = p.grad.detach().reshape(-1).float()
                    buf[total + i] = 1.0
                offset += n
            buf[-2], buf[-1] = float(n_local), float(success_sum)
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
            "success_signal": self.success_signal,
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
        signal = state.get("success_signal")
        self.success_signal = None if signal is None else float(signal)
        self.step = int(state["step"])


def _checked(rewards: Tensor, rollouts: Rollouts) -> Tensor:
    """(G,) float rewards on the CPU, or a ValueError that says what the reward function got wrong."""
    rewards = rewards.detach().float().cpu().reshape(-1)
    if rewards.shape != (rollouts.masks.shape[0],):
        raise ValueError(
            f"reward function returned {tuple(rewards.shape)} for {rollouts.masks.shape[0]} rollouts"
        )
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("reward function returned NaN or inf")
    return rewards


def _record(item: _Item, rollouts: Rollouts, rewards: Tensor, loss: LossOutput) -> dict[str, Any]:
    """What an iteration leaves for the item's log line."""
    evidence = item.job.prompt.evidence_mask
    recall = None
    if evidence is not None and bool(evidence.any()):
        ev = evidence.to(rollouts.masks.device)
        recall = float((rollouts.masks[0] & ev).sum()) / float(ev.sum())
    return {
        "rewards": rewards,
        "modes": rollouts.modes,
        "ratio": rollouts.ratio,
        "loss": float(loss.loss.detach()),
        "clip_fraction": loss.clip_fraction,
        "top": float(rewards[0]),
        "recall": recall,
    }


def rollout_seed(seed: int, rank: int) -> int:
    """The rollout generator's seed of process `rank`: `seed` itself for process 0 (so one process
    draws what it always drew), a different stream for every other process."""
    if rank == 0:
        return int(seed)
    return zlib.crc32(f"{int(seed)}|rank {int(rank)}".encode())
