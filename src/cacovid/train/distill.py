"""Warm start by distillation: teach the policy where the host looks when it reads the question.

Why: reinforcement learning from answer correctness is a weak signal for the one thing a fresh policy
cannot do at all, reading the question (its copied first layer sees the question, but its heads start
blind, and a policy primed with a question-blind prior keeps ignoring it). The host itself already
relates the question to the video: at a middle decoder layer, the attention of the last prompt token
(the position that will answer) rests on the video tokens the question is about. Distillation turns
that into a dense, per-token target, one host forward per item and no generation:

    p_i ∝ a_i^(1/τ)   (a: the host's last-token attention over video tokens at `layer`, τ: temperature)
    L_tok   = −Σ_i p_i · log softmax(s)_i          (s: the policy's token scores)
    L_frame = −Σ_t q_t · log softmax(u)_t,  q_t = Σ_{i in frame t} p_i   (u: frame scores)
    L = L_tok + frame_weight · L_frame

With `teacher="evidence"` the target is instead uniform over the item's annotated evidence tokens
(`QAItem.evidence`: the synthetic world knows them; real data sets with spatio-temporal grounding
annotations do too). Why offer it: on the decoys world the host's attention, its gradients and its
answers all point at only about 0.6 of the evidence (the toy answers from part of it), so no
host-derived target can teach a policy to keep more (docs/experiments.md, "The policy shipped for the
decoys world"); grounding labels can. It costs no host forward beyond encoding the item.

The policy keeps its architecture (docs/method.md §2); the distilled policy is a starting point for
`cacovid train --init-policy`. The teacher costs one partial host forward per item at training time
only; at inference the policy runs before the language model, as always. Checkpoints every
`checkpoint_every` steps resume exactly (data order and optimiser state).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from cacovid.ops.topk import topk_rows_mask
from cacovid.policy.network import CaCoVIDPolicy
from cacovid.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from cacovid.train.schedule import cosine_with_warmup, make_optimizer
from cacovid.types import EncodedPrompt, QAItem, token_budget

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM

__all__ = [
    "TEACHERS",
    "DistillConfig",
    "attention_targets",
    "distill_loss",
    "distill_policy",
    "evidence_targets",
]

TEACHERS = ("attention", "evidence")


@dataclass
class DistillConfig:
    """Knobs of a distillation run (see the module docstring for the loss).

    `teacher`: "attention" (the host's last-token attention at `layer`, sharpened by `temperature`)
    or "evidence" (uniform over the item's annotated evidence tokens). `epochs` passes over
    the items, `batch_size` items per optimiser step. The copied layer trains at `layer_lr_scale`
    times `lr`. `val_ratio`: validation reports, at this retention, how much of the teacher's top-K
    and (where known) of the evidence the policy's top-K keeps.
    """

    teacher: str = "attention"
    layer: int = 2
    temperature: float = 1.0
    frame_weight: float = 0.5
    epochs: int = 1
    batch_size: int = 8
    lr: float = 1e-3
    layer_lr_scale: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 20
    val_every: int = 50
    val_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.teacher not in TEACHERS:
            raise ValueError(f"unknown distill teacher {self.teacher!r}; known teachers: {list(TEACHERS)}")
        for name in ("epochs", "batch_size", "checkpoint_every", "val_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"distill {name} must be a positive integer, got {value!r}")
        for name in ("temperature", "lr"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"distill {name} must be a positive number, got {value!r}")
        for name in ("frame_weight", "layer_lr_scale", "weight_decay"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"distill {name} must be a number >= 0, got {value!r}")
        if not 0.0 < float(self.val_ratio) <= 1.0:
            raise ValueError(f"distill val_ratio must lie in (0, 1], got {self.val_ratio!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def attention_targets(attention: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N,) target distribution p ∝ a^(1/τ) from (N,) non-negative attention weights."""
    a = attention.detach().float().clamp_min(0.0)
    if a.dim() != 1 or a.numel() == 0:
        raise ValueError(f"attention must be a non-empty (N,) tensor, got {tuple(attention.shape)}")
    if float(a.sum()) <= 0.0:  # no attention on the video at all: no preference
        return torch.full_like(a, 1.0 / a.numel())
    logits = torch.log(a + 1e-12) / float(temperature)
    return torch.softmax(logits, dim=0)


def evidence_targets(prompt: EncodedPrompt, item_id: str = "") -> torch.Tensor:
    """(N,) target distribution uniform over the prompt's evidence tokens; an error where none are marked."""
    ev = prompt.evidence_mask
    if ev is None or not bool(ev.any()):
        raise ValueError(
            f"item {item_id!r} has no evidence annotation: the evidence teacher needs items whose "
            "evidence tokens are known (the synthetic world, or grounding annotations)"
        )
    ev = ev.detach().cpu().float()
    return ev / ev.sum()


def distill_loss(
    token_scores: torch.Tensor, frame_scores: torch.Tensor, target: torch.Tensor, frame_weight: float
) -> torch.Tensor:
    """Cross-entropy of the policy's token and frame distributions against the teacher's (module doc).

    `token_scores` (N,), `frame_scores` (T,), `target` (N,) summing to 1 with N = T·P.
    """
    T = frame_scores.shape[0]
    if target.shape != token_scores.shape or token_scores.numel() % T:
        raise ValueError(
            f"shapes do not fit: {tuple(token_scores.shape)} token scores, {T} frames, "
            f"{tuple(target.shape)} targets"
        )
    target = target.to(token_scores.device, token_scores.dtype)
    token = -(target * F.log_softmax(token_scores, dim=0)).sum()
    frame_target = target.reshape(T, -1).sum(dim=1)
    frame = -(frame_target * F.log_softmax(frame_scores, dim=0)).sum()
    return token + frame_weight * frame


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return topk_rows_mask(scores.detach().float().cpu().unsqueeze(0), k)[0]


class _Teacher:
    """Encodes an item and reads its target (host attention or evidence), caching nothing (items are many)."""

    def __init__(self, host: VideoLLM, config: DistillConfig) -> None:
        self.host, self.config = host, config

    def __call__(self, item: QAItem) -> tuple[EncodedPrompt, torch.Tensor]:
        with torch.no_grad():
            prompt = self.host.encode_item(item)
            if self.config.teacher == "evidence":
                return prompt, evidence_targets(prompt, item.id)
            attention = self.host.last_token_attention(prompt, self.config.layer)
        return prompt, attention_targets(attention.cpu(), self.config.temperature)


def validate(
    policy: CaCoVIDPolicy, teacher: _Teacher, items: Sequence[QAItem], ratio: float
) -> dict[str, float]:
    """Mean share of the teacher's top-K, and of the evidence, that the policy's top-K keeps."""
    agree, recall = [], []
    policy.eval()
    with torch.no_grad():
        for item in items:
            prompt, target = teacher(item)
            k = token_budget(prompt.num_video_tokens, ratio)
            mine = _top(policy(prompt).token_scores, k)
            agree.append(float((mine & _top(target, k)).sum()) / k)
            ev = prompt.evidence_mask
            if ev is not None and bool(ev.any()):
                recall.append(float((mine & ev.cpu().bool()).sum()) / float(ev.sum()))
    policy.train()
    out = {"teacher_agreement": sum(agree) / max(1, len(agree))}
    if recall:
        out["evidence_recall"] = sum(recall) / len(recall)
    return out


def distill_policy(
    policy: CaCoVIDPolicy,
    host: VideoLLM,
    items: Sequence[QAItem],
    out_dir: str | Path,
    config: DistillConfig | None = None,
    *,
    val_items: Sequence[QAItem] = (),
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> CaCoVIDPolicy:
    """Distil `host`'s question-conditioned attention into `policy`; writes OUT/policy, OUT/log.jsonl.

    Resumes from OUT/checkpoint when one exists (same items, same config). Returns the policy.
    """
    config = config or DistillConfig()
    if not items:
        raise ValueError("no items to distil on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = _Teacher(host, config)
    opt = make_optimizer(policy, config.lr, config.layer_lr_scale, config.weight_decay)
    base_lrs = [group["lr"] for group in opt.param_groups]
    steps_per_epoch = math.ceil(len(items) / config.batch_size)
    total = steps_per_epoch * config.epochs
    step = 0
    log = out / "log.jsonl"
    found = find_checkpoint(out)
    if found is not None:
        state, saved = load_checkpoint(found, policy)
        if json.loads(saved) != json.loads(config.to_json()) or state.get("n_items") != len(items):
            raise ValueError(
                f"{out} holds a distillation run with other settings or items; use another --out"
            )
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        if log.exists():  # drop log lines a crashed run wrote after its last checkpoint
            with open(log, "r+b") as f:
                f.truncate(int(state.get("log_bytes", 0)))
    policy.train()
    while step < total:
        epoch, within = divmod(step, steps_per_epoch)
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(config.seed + epoch))
        batch = [items[int(i)] for i in order[within * config.batch_size : (within + 1) * config.batch_size]]
        pairs = [teacher(item) for item in batch]
        outputs = policy.forward_batch([p for p, _ in pairs])
        loss = torch.stack(
            [
                distill_loss(out.token_scores, out.frame_scores, target, config.frame_weight)
                for out, (_, target) in zip(outputs, pairs, strict=True)
            ]
        ).mean()
        # Cosine decay to 5 % over the whole run (counted in optimiser steps).
        scale = cosine_with_warmup(step, total, warmup=0, min_scale=0.05)
        for group, base in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = base * scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        step += 1
        record: dict[str, Any] = {"step": step, "epoch": epoch, "loss": round(float(loss.detach()), 5)}
        if val_items and (step % config.val_every == 0 or step == total):
            record["val"] = validate(policy, teacher, val_items, config.val_ratio)
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
        if on_step is not None:
            on_step({**record, "total": total})
        if step % config.checkpoint_every == 0 or step == total:
            state = {
                "step": step,
                "optimizer": opt.state_dict(),
                "n_items": len(items),
                "log_bytes": log.stat().st_size,
            }
            save_checkpoint(out, policy, state, config.to_json())
    policy.save_pretrained(out / "policy")
    return policy
