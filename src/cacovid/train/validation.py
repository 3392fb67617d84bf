"""What the trainer asks of the frozen model besides rollouts: the blind test and validation.

- **Blind test** (docs/method.md §5): an item the frozen model answers correctly with *no* video tokens
  carries no signal about which tokens matter, so it is dropped before training.
- **Validation**: accuracy of the current policy (through `CaCoVIDSelector`, exactly as evaluation
  will use it) at several retention ratios, logged while training runs. Per-item figures
  (`validation_outcomes`) and their means (`validation_rows`) are separate steps, so processes that
  each validate a share of the items pool the figures before averaging.

Both batch many prompts into one adapter call (rows of differently pruned prompts are allowed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from cacovid.scoring import TextReward, accuracy_reward
from cacovid.types import EncodedPrompt, QAItem, Selector

if TYPE_CHECKING:
    from cacovid.models.base import Row, VideoLLM


def _chunks(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def blind_answers_correct(
    adapter: VideoLLM,
    items: Sequence[QAItem],
    *,
    reward: TextReward = accuracy_reward,
    batch_size: int = 16,
    max_new_tokens: int = 4,
    threshold: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> list[bool]:
    """For each item: does the frozen model answer it correctly (reward ≥ threshold) blind?

    "Blind" means every video token is dropped (an all-False keep mask); text and separators stay.
    The prompts are encoded blind (`VideoLLM.encode`), without the vision tower, which would compute
    features that are all dropped. `progress(n)` is called after every batch of n items.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[bool] = []
    for idx in _chunks(len(items), batch_size):
        chunk = [items[i] for i in idx]
        prompts = [adapter.encode_item(it, blind=True) for it in chunk]
        rows: list[Row] = [(p, torch.zeros(p.num_video_tokens, dtype=torch.bool), None) for p in prompts]
        texts = adapter.generate_rows(rows, max_new_tokens=max_new_tokens)
        out.extend(reward(t, it) >= threshold for t, it in zip(texts, chunk, strict=True))
        if progress is not None:
            progress(len(chunk))
    return out


def blind_filter(
    adapter: VideoLLM,
    items: Sequence[QAItem],
    *,
    reward: TextReward = accuracy_reward,
    batch_size: int = 16,
    max_new_tokens: int = 4,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Indices of the items to keep for training: those the frozen model gets wrong blind."""
    correct = blind_answers_correct(
        adapter, items, reward=reward, batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress
    )
    return [i for i, c in enumerate(correct) if not c]


def validate_selector(
    adapter: VideoLLM,
    selector: Selector,
    prompts: Sequence[EncodedPrompt],
    items: Sequence[QAItem],
    ratios: Sequence[float],
    *,
    reward: TextReward = accuracy_reward,
    batch_size: int = 16,
    max_new_tokens: int = 4,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per ratio: accuracy, evidence recall (where known) and mean compression time.

    `prompts[i]` must be the encoding of `items[i]` (encode once, validate many times).
    """
    outcomes = validation_outcomes(
        adapter,
        selector,
        prompts,
        items,
        ratios,
        reward=reward,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    return validation_rows(outcomes)


def validation_outcomes(
    adapter: VideoLLM,
    selector: Selector,
    prompts: Sequence[EncodedPrompt],
    items: Sequence[QAItem],
    ratios: Sequence[float],
    *,
    reward: TextReward = accuracy_reward,
    batch_size: int = 16,
    max_new_tokens: int = 4,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Per ratio, the per-item figures behind a validation row: {"ratio", "correct", "recall", "ms"}.

    Kept apart from `validation_rows` so processes that each validate a share of the items can
    pool their figures (`merge_outcomes`) before the means are taken.
    """
    if len(prompts) != len(items):
        raise ValueError(f"{len(prompts)} prompts for {len(items)} items")
    out = []
    for ratio in ratios:
        correct, recalls, ms = [], [], []
        for idx in _chunks(len(items), batch_size):
            rows: list[Row] = []
            for i in idx:
                sel = selector.select(prompts[i], ratio)
                ms.append(sel.compression_ms)
                ev = prompts[i].evidence_mask
                if ev is not None and bool(ev.any()):
                    ev = ev.to(sel.keep.device)
                    recalls.append(float((sel.keep & ev).sum()) / float(ev.sum()))
                rows.append((prompts[i], sel.keep, sel.embeds))
            texts = adapter.generate_rows(rows, max_new_tokens=max_new_tokens)
            correct.extend(reward(t, items[i]) for t, i in zip(texts, idx, strict=True))
            if progress is not None:
                progress()
        out.append({"ratio": float(ratio), "correct": correct, "recall": recalls, "ms": ms})
    return out


def merge_outcomes(parts: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The outcomes of several item shares (same ratios, in the same order) as one."""
    if not parts:
        return []
    merged = [{"ratio": o["ratio"], "correct": [], "recall": [], "ms": []} for o in parts[0]]
    for part in parts:
        if [o["ratio"] for o in part] != [o["ratio"] for o in merged]:
            raise ValueError("validation outcomes of different ratios cannot be merged")
        for into, o in zip(merged, part, strict=True):
            for key in ("correct", "recall", "ms"):
                into[key].extend(o[key])
    return merged


def validation_rows(outcomes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ratio from `validation_outcomes`: accuracy, evidence recall (where known), mean
    compression time."""
    rows_out = []
    for o in outcomes:
        correct, recalls, ms = o["correct"], o["recall"], o["ms"]
        row: dict[str, Any] = {
            "ratio": float(o["ratio"]),
            "n": len(correct),
            "accuracy": sum(correct) / max(len(correct), 1),
            "compression_ms": sum(ms) / max(len(ms), 1),
        }
        if recalls:
            row["evidence_recall"] = sum(recalls) / len(recalls)
        rows_out.append(row)
    return rows_out
