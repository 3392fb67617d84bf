"""PROTOTYPE: CaCoVID scoring on pooled video tokens, the policy's layer reads k x k cell means, not every
token; and the check of what pooling costs in quality.

This is a prototype measured by `bench/overhead.py`, not a library option: the library is to get a
pooled policy option of its own, and a policy trained with pooling has not been measured. It lives
in the benchmarks' shared helper only so that `overhead.py` can time and evaluate it.

Why: the policy is one full-width decoder layer over the whole prompt, so at LLaVA-OneVision-7B shape it
costs about 1/28 of the 28-layer prefill before any token is dropped. Averaging each k x k spatial cell
of every frame into one token before the layer shortens the video part of the sequence k² times (the
layer's linear parts shrink k² times, its attention up to k⁴ times), with no retraining: the pooled
token is a mean of tokens the layer has seen, placed at the position id of its cell's first member.

Scores go back to the full grid by broadcast: every member of a cell gets its cell's score, and the
budgeted selection (docs/method.md §3) then runs on the full grid as usual, so the keep mask still
holds exactly `token_budget(N, ratio)` tokens. Ties inside a cell fall to the selection's own order.
With `full_resolution_terms` the policy's per-token terms that do not need the layer (the question-match
and cross-frame context terms, the novelty prior; `policy/question.py`, `policy/context.py`) are
recomputed on the full grid and replace their pooled values, which tells the members of a cell apart
at a cost linear in the number of tokens.

Frames whose side is not a multiple of k get smaller cells at the bottom / right edge (7 x 7 with
k = 2: 4 x 4 cells of 4, 2 and 1 tokens).
"""

from __future__ import annotations

import math
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import benchutil
from cacovid.policy import CaCoVIDSelector, budgeted_select
from cacovid.types import EncodedPrompt, Selection


def cell_index(height: int, width: int, k: int) -> tuple[torch.Tensor, int, int]:
    """(H*W,) index of each token's k x k cell in one frame (row-major cells), and the cell grid (H', W')."""
    if k < 1 or height < 1 or width < 1:
        raise ValueError(f"need a positive pool size and frame grid, got k={k}, grid {height}x{width}")
    rows, cols = math.ceil(height / k), math.ceil(width / k)
    h = torch.arange(height).repeat_interleave(width) // k
    w = torch.arange(width).repeat(height) // k
    return h * cols + w, rows, cols


def pool_prompt(prompt: EncodedPrompt, k: int) -> tuple[EncodedPrompt, torch.Tensor]:
    """The prompt with every k x k cell of every frame averaged into one token, and (N,) the pooled
    video token each original video token belongs to.

    The text and every position outside the video grid stay as they are; a cell's token sits where its
    first (top-left) member sat and keeps that member's position id, so sequence order and RoPE
    positions are the original ones, as after any token pruning.
    """
    T, H, W = prompt.video_grid
    cells, rows, cols = cell_index(H, W, k)
    dev = prompt.inputs_embeds.device
    per_frame = rows * cols
    frame_of = torch.arange(T).repeat_interleave(H * W)
    members = (frame_of * per_frame + cells.repeat(T)).to(dev)  # (N,) pooled token of each video token
    video = prompt.inputs_embeds[prompt.video_positions]  # (N, D)
    sums = torch.zeros(T * per_frame, video.shape[1], dtype=torch.float32, device=dev)
    sums.index_add_(0, members, video.float())
    counts = torch.bincount(members, minlength=T * per_frame).clamp_min(1).unsqueeze(1)
    pooled = (sums / counts).to(video.dtype)
    # The first member of each cell, in (t, h', w') order: it holds the cell's place in the sequence.
    first = torch.full((T * per_frame,), prompt.video_positions.numel(), dtype=torch.long, device=dev)
    first.scatter_reduce_(0, members, torch.arange(members.numel(), device=dev), reduce="amin")
    L = prompt.inputs_embeds.shape[0]
    keep = torch.ones(L, dtype=torch.bool, device=dev)
    keep[prompt.video_positions] = False
    keep[prompt.video_positions[first]] = True
    embeds = prompt.inputs_embeds.clone()
    embeds[prompt.video_positions[first]] = pooled
    new_index = torch.cumsum(keep.long(), 0) - 1  # old sequence position → new one (where kept)
    pooled_prompt = EncodedPrompt(
        inputs_embeds=embeds[keep],
        position_ids=prompt.position_ids[..., keep],
        attention_mask=prompt.attention_mask[keep],
        video_positions=new_index[prompt.video_positions[first]],
        video_grid=(T, rows, cols),
        input_ids=None if prompt.input_ids is None else prompt.input_ids[keep],
    )
    return pooled_prompt, members


class PooledCaCoVIDSelector:
    """PROTOTYPE, not a library selector: a CaCoVID selector whose policy scores k x k pooled tokens
    (see the module docstring; the library is to get a pooled policy option of its own).

    It takes the policy and the selection settings (alpha, cap, fill) of an existing
    `CaCoVIDSelector`, so a shipped policy is compared with its own pooled variant and nothing else
    changes. `compression_ms` covers pooling, the policy forward, the broadcast and the selection.
    """

    def __init__(self, base: CaCoVIDSelector, k: int = 2, *, full_resolution_terms: bool = False) -> None:
        if not isinstance(base, CaCoVIDSelector):
            raise ValueError(f"base must be a CaCoVIDSelector, got {type(base).__name__}")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"pool size k must be a positive integer, got {k!r}")
        if base.policy.config.selection_rule != "cacovid":
            raise ValueError(
                f"pooled scoring supports selection_rule 'cacovid', not {base.policy.config.selection_rule!r}"
            )
        self.base = base
        self.k = int(k)
        self.full_resolution_terms = bool(full_resolution_terms)
        suffix = "+terms" if self.full_resolution_terms else ""
        self.name = f"cacovid-pool{self.k}{suffix}"

    def _terms(self, prompt: EncodedPrompt) -> torch.Tensor | None:
        """(N,) the keep-minus-drop part of the policy's per-token terms on `prompt` (None: it has none)."""
        policy = self.base.policy
        total = None
        if policy.question_match is not None:
            logits = policy.question_term(prompt)
            total = logits[:, 1] - logits[:, 0]
        if policy.config.novelty_weight:
            logits = policy.novelty_prior(prompt)
            part = logits[:, 1] - logits[:, 0]
            total = part if total is None else total + part
        return total

    def scores(self, prompt: EncodedPrompt) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) token scores on the full grid and (T,) frame scores, from the pooled prompt."""
        policy = self.base.policy
        pooled, members = pool_prompt(prompt, self.k)
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad():
                out = policy(pooled)
                members = members.to(out.token_logits.device)
                tokens = out.token_scores[members]
                if self.full_resolution_terms:
                    coarse, fine = self._terms(pooled), self._terms(prompt)
                    if coarse is not None and fine is not None:
                        tokens = tokens - coarse[members] + fine.to(tokens)
        finally:
            policy.train(was_training)
        return tokens, out.frame_scores

    def select(
        self, prompt: EncodedPrompt, ratio: float, *, generator: torch.Generator | None = None
    ) -> Selection:
        start = time.perf_counter()
        tokens, frames = self.scores(prompt)
        keep = budgeted_select(
            tokens.reshape(prompt.num_frames, prompt.tokens_per_frame),
            frames,
            ratio,
            alpha=self.base.alpha,
            cap=self.base.cap,
            fill=self.base.fill,
        ).to(prompt.video_positions.device)
        ms = (time.perf_counter() - start) * 1000.0
        return Selection(keep=keep, compression_ms=ms, info={"pool": self.k, "alpha": self.base.alpha})


def pooled_variants(base: CaCoVIDSelector, k: int, *, with_terms: bool = True) -> list[PooledCaCoVIDSelector]:
    """The pooled variants of `base`: the plain broadcast, and (`with_terms`) the one that recomputes
    the per-token terms on the full grid."""
    return [
        PooledCaCoVIDSelector(base, k, full_resolution_terms=terms)
        for terms in ((False, True) if with_terms else (False,))
    ]


# ---- what pooling costs in quality ---------------------------------------------------------------
def mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and its standard error (sample std / √n; None below two values)."""
    if not values:
        return None, None
    m = float(statistics.fmean(values))
    se = float(statistics.stdev(values) / math.sqrt(len(values))) if len(values) > 1 else None
    return m, se


def quality_rows(rows: Sequence[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Per method: accuracy and evidence recall with n and standard errors, and the paired difference
    of each to `reference` on the items both answered (so item difficulty cancels)."""
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["item_id"]] = r
    ref = by_method.get(reference, {})
    out = []
    for method, items in by_method.items():
        ok = [r for r in items.values() if not r.get("error_kind") or r["error_kind"] == "unparsable"]
        acc, acc_se = mean_se([float(r["correct"]) for r in ok])
        recall, recall_se = mean_se([r["evidence_recall"] for r in ok if r["evidence_recall"] is not None])
        shared = [i for i in items if i in ref]
        diff, diff_se = mean_se([float(items[i]["correct"]) - float(ref[i]["correct"]) for i in shared])
        rdiff, rdiff_se = mean_se(
            [
                items[i]["evidence_recall"] - ref[i]["evidence_recall"]
                for i in shared
                if items[i]["evidence_recall"] is not None and ref[i]["evidence_recall"] is not None
            ]
        )
        out.append(
            {
                "method": method,
                "ratio": next(iter(items.values()))["ratio"],
                "n": len(ok),
                "errors": len(items) - len(ok),
                "accuracy": acc,
                "accuracy_se": acc_se,
                "evidence_recall": recall,
                "evidence_recall_se": recall_se,
                "accuracy_diff": diff if method != reference else None,
                "accuracy_diff_se": diff_se if method != reference else None,
                "recall_diff": rdiff if method != reference else None,
                "recall_diff_se": rdiff_se if method != reference else None,
            }
        )
    return out


def quality_world(
    adapter, world: str, work: Path, *, pool: int, ratio: float, items: int, seed: int, model: str | None
) -> list[dict[str, Any]]:
    """The world's shipped policy and its pooled variants on the same test items at one ratio, through
    the evaluation harness (results kept in `work`, so a second call resumes)."""
    from cacovid.data.sources import synthetic_source
    from cacovid.evaluate import EvalConfig, build_methods, run_evaluation
    from cacovid.evaluate.methods import Method
    from cacovid.evaluate.records import read_rows

    policy = benchutil.policy_dir(benchutil.world_preset(world))
    methods = build_methods(["cacovid"], adapter, policy=str(policy), seed=seed)
    methods += [Method(p.name, p) for p in pooled_variants(methods[0].selector, pool)]
    config = EvalConfig(ratios=[ratio], batch_size=8, seed=seed, keep_masks=False)
    source = synthetic_source(world, "test", items)
    with torch.inference_mode():
        run_evaluation(adapter, source, methods, work, config, model=model)
    rows = quality_rows(read_rows(work), "cacovid")
    return [{"world": world, "policy": policy.name, **r} for r in rows]


def compare_quality(
    adapter,
    worlds: Sequence[str],
    *,
    pool: int,
    ratio: float,
    items: int,
    seed: int = 0,
    model: str | None = None,
    work: str | Path | None = None,
) -> dict[str, Any]:
    """Every world's shipped policy against its pooled variants (`quality_world`), in one result: the
    `quality` part of `overhead.py`'s JSON. `work`: where the evaluation rows go (default: temporary)."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cacovid-overhead-") as tmp:
        root = Path(work) if work else Path(tmp)
        for world in worlds:
            folder = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", world)
            rows += quality_world(
                adapter, world, folder, pool=pool, ratio=ratio, items=items, seed=seed, model=model
            )
    return {"worlds": list(worlds), "ratio": ratio, "items": items, "rows": rows}


def _pm(value: float | None, se: float | None, scale: float = 100.0, signed: bool = False) -> str:
    """`value ± se` in percent (points when `signed`), "—" for no value."""
    if value is None:
        return "—"
    text = f"{scale * value:+.1f}" if signed else f"{scale * value:.1f}"
    return text if se is None else f"{text} ± {scale * se:.1f}"


def quality_table(q: dict[str, Any]):
    """The table of `compare_quality`'s result."""
    from rich.table import Table

    table = Table(
        title=f"quality of pooled scoring: {q['items']} test items per world, ρ = {100 * q['ratio']:g} % "
        f"(± standard error; Δ: paired difference to cacovid on the same items)"
    )
    for i, col in enumerate(("world", "method", "n", "acc %", "recall %", "Δ acc points", "Δ recall points")):
        table.add_column(col, justify="left" if i < 2 else "right")
    for r in q["rows"]:
        table.add_row(
            r["world"],
            r["method"],
            str(r["n"]),
            _pm(r["accuracy"], r["accuracy_se"]),
            _pm(r["evidence_recall"], r["evidence_recall_se"]),
            _pm(r["accuracy_diff"], r["accuracy_diff_se"], signed=True),
            _pm(r["recall_diff"], r["recall_diff_se"], signed=True),
        )
    return table
