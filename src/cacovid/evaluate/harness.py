"""The evaluation harness: {methods} × {ratios} × {items} on one adapter, resumable, one JSONL row each.

Flow per group of `batch_size` items: encode each item once (the vision tower runs once, with
`vision_attention=True` only when a pending method needs it), run every pending (method, ratio)
selection on that one EncodedPrompt, answer the group's rows in batched `generate_rows` calls, one
per prompt length, score, and append the item's rows to `DIR/items.jsonl`, flushed to disk before
the next item. `DIR/summary.json` is rewritten after every item, so an interrupted run always has a
summary of what it finished.

Why one call per length: every selector keeps exactly ⌊ratio·N⌋ tokens, so an item's rows at one
ratio share a length, but the `full` row is several times longer than the compressed ones. In one
left-padded call every row would pay for the longest one: on the toy model the padded prefill was
about 7 times the work of the rows themselves. Rows of one length need no padding at all, so a row's
answer also no longer depends on which other rows share its call.

Resume: rows already in items.jsonl are never recomputed (an item whose rows are all present is not
even encoded). With `retry_errors`, rows that recorded a pipeline error are computed again; the newer
row wins. A run refuses to append to a directory written with a different model, data set, world, seed
or decoding length (`run.json`), because the rows would not be comparable; adding methods, ratios or
items to a finished run is fine.

Failures never stop the run: an unreadable video, a selector that raises, a generation failure or an
answer that names no option is recorded in the row's `error` / `error_kind` and the run goes on.
A failed batched generation is retried row by row so one bad row cannot sink the group.

Question sensitivity: for an item that carries a counterfactual question (the same video, asked about
another object; `QAItem.counterfactual`), every selector row also selects on the counterfactual
prompt, with the row's own seed, and records how much of the counterfactual object's evidence it
keeps then (`question_sensitivity`) and when asked the item's own question (`question_base_rate`),
and the Jaccard overlap of the two selections (`question_jaccard`). A selector that ignores the
question keeps the same tokens both times: its sensitivity equals its base rate. Where the
counterfactual cannot be encoded or selected, the three stay null and the row itself is unaffected.

Randomness: every row gets its own generator seeded from (seed, item id, method, ratio), so a row's
result does not depend on which rows were computed before it, in this run or a resumed one.

Several processes (`accelerate launch`, docs/scale-out.md): process r of W takes the items at
positions r, r + W, r + 2W, … and computes their pending rows; the processes meet after each group of
`batch_size` items, process 0 gathers the groups' rows and writes them in item order to the one
items.jsonl and summary.json (the others write nothing). Every process reads the same items.jsonl at
the start, so resume skips the same rows; a fresh run's rows come out in the order one process
writes them.
"""

from __future__ import annotations

import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cacovid.data.sources import ItemSource
from cacovid.distributed import Processes, current, shard
from cacovid.evaluate.methods import Method
from cacovid.evaluate.records import (
    ITEMS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    RowWriter,
    encode_mask,
    latest_rows,
    ratio_key,
    read_json,
    read_rows,
    repair_tail,
    row_key,
    write_json,
)
from cacovid.evaluate.scoring import score_answer
from cacovid.evaluate.summary import summarize
from cacovid.progress import Progress
from cacovid.types import EncodedPrompt, QAItem, Selection

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM

# run.json fields that must match for rows to be comparable (resume refuses otherwise).
RUN_IDENTITY = ("model", "dataset", "world", "seed", "max_new_tokens")
MAX_ROWS_PER_CALL = 64


@dataclass
class EvalConfig:
    """Knobs of one evaluation run.

    `batch_size` = items whose rows share one batched generate call (all (method, ratio) rows of an
    item always do). `max_new_tokens` bounds the greedy answer. `retry_errors` recomputes rows that
    recorded a pipeline error (encode / select / generate / score; not unparsable answers).
    `keep_masks` stores each row's keep mask (compact) for heat-maps. `question_sensitivity`
    measures it on items that carry a counterfactual question (see the module docstring).
    """

    ratios: Sequence[float] = (0.25, 0.1)
    max_new_tokens: int = 8
    batch_size: int = 1
    seed: int = 0
    retry_errors: bool = False
    keep_masks: bool = True
    question_sensitivity: bool = True

    def __post_init__(self) -> None:
        ratios = [float(r) for r in self.ratios]
        if not ratios or any(not 0.0 < r <= 1.0 for r in ratios):
            raise ValueError(f"ratios must be a non-empty list of numbers in (0, 1], got {list(self.ratios)}")
        self.ratios = sorted({ratio_key(r) for r in ratios}, reverse=True)
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class ItemEvent:
    """What the progress callback gets after each item: its position, id, the rows written for it
    (empty when it was already done) and how many of them recorded an error."""

    position: int
    item_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False

    @property
    def n_errors(self) -> int:
        return sum(1 for r in self.rows if r.get("error") is not None)


@dataclass
class _Pending:
    position: int
    item: QAItem
    tasks: list[tuple[Method, float]]
    prompt: EncodedPrompt | None = None
    error: str | None = None
    counterfactual: EncodedPrompt | None = None


def row_generator(seed: int, item_id: str, method: str, ratio: float) -> torch.Generator:
    """A generator seeded from (seed, item, method, ratio) alone: results do not depend on order."""
    key = f"{seed}|{item_id}|{method}|{ratio_key(ratio)}".encode()
    return torch.Generator().manual_seed(zlib.crc32(key))


def _packed_length(row: tuple) -> int:
    """Tokens a (prompt, keep, embeds) row takes in a batch: the prompt less its dropped video tokens."""
    prompt, keep = row[0], row[1]
    return int(prompt.inputs_embeds.shape[0]) - prompt.num_video_tokens + int(keep.sum())


def _length_groups(rows: Sequence[tuple]) -> list[list[int]]:
    """Indices of `rows` grouped by packed length, groups in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(_packed_length(row), []).append(i)
    return list(groups.values())


def _error_text(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"[:500]


def run_description(
    adapter: VideoLLM, source: ItemSource, methods: Sequence[Method], config: EvalConfig, model: str | None
) -> dict[str, Any]:
    """What run.json records about a run."""
    return {
        "model": model or adapter.name_or_path or type(adapter).__name__,
        "model_family": adapter.family,
        "dataset": source.dataset,
        "world": source.world,
        "n_planned": source.n,
        "methods": [m.name for m in methods],
        "ratios": list(config.ratios),
        "seed": config.seed,
        "max_new_tokens": config.max_new_tokens,
    }


def _merge_run(old: dict[str, Any] | None, new: dict[str, Any], folder: Path) -> dict[str, Any]:
    if old is None:
        return new
    for key in RUN_IDENTITY:
        if old.get(key) != new.get(key):
            raise ValueError(
                f"{folder} holds results of a different run ({key}: {old.get(key)!r} there, "
                f"{new.get(key)!r} now); use another --out directory"
            )
    merged = dict(old)
    merged["methods"] = list(dict.fromkeys([*old.get("methods", []), *new["methods"]]))
    merged["ratios"] = sorted({*old.get("ratios", []), *new["ratios"]}, reverse=True)
    merged["n_planned"] = max(int(old.get("n_planned") or 0), int(new["n_planned"]))
    return merged


class Harness:
    """One evaluation run into a results directory (see the module docstring)."""

    def __init__(
        self,
        adapter: VideoLLM,
        source: ItemSource,
        methods: Sequence[Method],
        out: str | Path,
        config: EvalConfig | None = None,
        *,
        model: str | None = None,
        on_item: Callable[[ItemEvent], None] | None = None,
        processes: Processes | None = None,
    ) -> None:
        if not methods:
            raise ValueError("no methods to evaluate")
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique, got {names}")
        self.adapter = adapter
        self.source = source
        self.methods = list(methods)
        self.out = Path(out)
        self.config = config or EvalConfig()
        self.on_item = on_item
        self.processes = processes or current()
        procs = self.processes
        self.out.mkdir(parents=True, exist_ok=True)
        new = run_description(adapter, source, self.methods, self.config, model)
        # Every process checks run.json (so all refuse a different run together); process 0 writes.
        self.run = _merge_run(read_json(self.out / RUN_FILE), new, self.out)
        procs.barrier()
        if procs.is_main:
            write_json(self.out / RUN_FILE, self.run)
            repair_tail(self.out / ITEMS_FILE)
        procs.barrier()
        self.rows: list[dict[str, Any]] = read_rows(self.out / ITEMS_FILE)
        done = latest_rows(self.rows)
        if self.config.retry_errors:  # pipeline failures only: an unparsable answer is an answer
            done = [r for r in done if r.get("error") is None or r.get("error_kind") == "unparsable"]
        self.done = {row_key(r) for r in done}
        self.n_computed = 0

    # ---- planning ----------------------------------------------------------------------------
    def tasks_for(self, item: QAItem) -> list[tuple[Method, float]]:
        """The (method, ratio) rows of `item` not yet in items.jsonl."""
        out = []
        for method in self.methods:
            if method.needs_evidence and item.evidence is None:
                continue
            for ratio in method.ratios(self.config.ratios):
                if (str(item.id), method.name, ratio_key(ratio)) not in self.done:
                    out.append((method, ratio))
        return out

    # ---- the run -----------------------------------------------------------------------------
    def run_all(self) -> dict[str, Any]:
        """Evaluate every pending row; returns the final summary (also in DIR/summary.json)."""
        if self.processes.distributed:
            return self._run_shared()
        self.write_summary()
        with RowWriter(self.out / ITEMS_FILE) as writer:
            group: list[_Pending] = []
            for position, item in enumerate(self.source.items()):
                tasks = self.tasks_for(item)
                if not tasks:
                    if self.on_item is not None:
                        self.on_item(ItemEvent(position, str(item.id), skipped=True))
                    continue
                group.append(_Pending(position, item, tasks))
                if len(group) >= self.config.batch_size:
                    self._process(group, writer)
                    group = []
            if group:
                self._process(group, writer)
        return self.write_summary()

    def _run_shared(self) -> dict[str, Any]:
        """`run_all` with several processes: this process's items, in lockstep with the others."""
        procs = self.processes
        sequence = self.source.sequence
        positions = iter(shard(len(sequence), procs))
        exhausted = False
        writer = RowWriter(self.out / ITEMS_FILE) if procs.is_main else None
        try:
            if procs.is_main:
                self.write_summary()
            while True:
                group: list[_Pending] = []
                skipped: list[tuple[int, str]] = []
                while len(group) < self.config.batch_size and not exhausted:
                    position = next(positions, None)
                    if position is None:
                        exhausted = True
                        break
                    item = sequence[position]
                    tasks = self.tasks_for(item)
                    if tasks:
                        group.append(_Pending(position, item, tasks))
                    else:
                        skipped.append((position, str(item.id)))
                computed = self._compute(group) if group else []
                done = [(p.position, str(p.item.id), rows) for p, rows in zip(group, computed, strict=True)]
                parts = procs.all_gather(
                    {"done": done, "skipped": skipped, "finished": exhausted and not group}
                )
                # Process 0 counts the rows of every process, the others their own.
                counted = parts if procs.is_main else parts[procs.rank : procs.rank + 1]
                self.n_computed += sum(len(rows) for part in counted for _, _, rows in part["done"])
                if writer is not None:
                    self._merge_parts(parts, writer)
                if all(part["finished"] for part in parts):
                    break
        finally:
            if writer is not None:
                writer.close()
        summary = self.write_summary() if procs.is_main else None
        return procs.broadcast(summary)

    def _merge_parts(self, parts: list[dict[str, Any]], writer: RowWriter) -> None:
        """Process 0: write one lockstep round's rows of every process, in item order."""
        events: list[tuple[int, str, list[dict[str, Any]] | None]] = []
        for part in parts:
            events += [(position, item_id, rows) for position, item_id, rows in part["done"]]
            events += [(position, item_id, None) for position, item_id in part["skipped"]]
        for position, item_id, rows in sorted(events, key=lambda e: e[0]):
            if rows is None:
                if self.on_item is not None:
                    self.on_item(ItemEvent(position, item_id, skipped=True))
                continue
            self._record(position, item_id, rows, writer)

    def write_summary(self) -> dict[str, Any]:
        summary = summarize(self.rows, self.run)
        summary["n_items_planned"] = self.run.get("n_planned")
        write_json(self.out / SUMMARY_FILE, summary)
        return summary

    def _encode(self, pending: _Pending) -> None:
        vision_attention = any(m.needs_vision_attention for m, _ in pending.tasks)
        try:
            pending.prompt = self.adapter.encode_item(pending.item, vision_attention=vision_attention)
        except Exception as exc:  # an unreadable video must not stop the run
            pending.error = _error_text(exc)
            return
        cf = pending.item.counterfactual
        wanted = any(m.kind == "select" for m, _ in pending.tasks)
        if cf is not None and wanted and self.config.question_sensitivity:
            # The same video: lend it the item's video features (no second vision-tower pass),
            # unless a selector reads the tower's attention, which only a full encoding records.
            reuse = not vision_attention and pending.item.shows_same_video(cf)
            features = self.adapter.placeholder_features(pending.prompt) if reuse else None
            try:
                pending.counterfactual = self.adapter.encode_item(
                    cf, vision_attention=vision_attention, features=features
                )
            except Exception:  # the metric is optional; the item's own rows go on
                pending.counterfactual = None

    def _question_sensitivity(
        self, row: dict[str, Any], pending: _Pending, method: Method, ratio: float, keep: torch.Tensor
    ) -> None:
        """Select on the counterfactual prompt (same seed) and record the three figures in `row`."""
        cf_prompt = pending.counterfactual
        if cf_prompt is None or method.kind != "select" or cf_prompt.evidence_mask is None:
            return
        cf_ev = cf_prompt.evidence_mask.detach().cpu().to(torch.bool)
        if int(cf_ev.sum()) == 0 or cf_ev.shape != keep.shape:
            return
        try:
            gen = row_generator(self.config.seed, str(pending.item.id), method.name, ratio)
            cf_keep = method.select(cf_prompt, ratio, gen).keep.detach().cpu().to(torch.bool)
        except Exception:
            return
        n_ev = float(cf_ev.sum())
        union = float((keep | cf_keep).sum())
        row.update(
            question_sensitivity=float((cf_keep & cf_ev).sum()) / n_ev,
            question_base_rate=float((keep & cf_ev).sum()) / n_ev,
            question_jaccard=float((keep & cf_keep).sum()) / union if union else 1.0,
        )

    def _process(self, group: list[_Pending], writer: RowWriter) -> None:
        for pending, rows in zip(group, self._compute(group), strict=True):
            self._record(pending.position, str(pending.item.id), rows, writer)
            self.n_computed += len(rows)

    def _record(self, position: int, item_id: str, rows: list[dict[str, Any]], writer: RowWriter) -> None:
        """Append one item's rows to items.jsonl (flushed), refresh the summary, report the item."""
        writer.write(rows)
        writer.flush()
        self.rows.extend(rows)
        self.done.update(row_key(r) for r in rows)
        self.write_summary()
        if self.on_item is not None:
            self.on_item(ItemEvent(position, item_id, rows))

    def _compute(self, group: list[_Pending]) -> list[list[dict[str, Any]]]:
        """Every pending row of a group of items (encode, select, one batched generate, score)."""
        for pending in group:
            self._encode(pending)
        # Selections: one per (item, method, ratio); a failing selector only fails its row.
        per_item: list[list[dict[str, Any]]] = []
        gen_rows: list[tuple[EncodedPrompt, torch.Tensor, torch.Tensor | None]] = []
        gen_refs: list[dict[str, Any]] = []
        for pending in group:
            rows = []
            for method, ratio in pending.tasks:
                row = self._base_row(pending, method, ratio)
                rows.append(row)
                if pending.prompt is None:
                    row.update(error=pending.error, error_kind="encode")
                    continue
                try:
                    gen = row_generator(self.config.seed, str(pending.item.id), method.name, ratio)
                    selection = method.select(pending.prompt, ratio, gen)
                    self._fill_selection(row, pending.prompt, method, selection)
                except Exception as exc:
                    row.update(error=_error_text(exc), error_kind="select")
                    continue
                self._question_sensitivity(row, pending, method, ratio, selection.keep.detach().cpu().bool())
                gen_rows.append((pending.prompt, selection.keep.cpu(), selection.embeds))
                gen_refs.append(row)
            per_item.append(rows)
        answers = self._generate(gen_rows)
        for row, answer in zip(gen_refs, answers, strict=True):
            if isinstance(answer, BaseException):
                row.update(error=_error_text(answer), error_kind="generate")
            else:
                row["prediction"] = answer
        for pending, rows in zip(group, per_item, strict=True):
            for row in rows:
                if row.get("error") is None:
                    self._score(row, pending.item)
        return per_item

    def _generate(self, rows: list) -> list[str | BaseException]:
        """Answers for all rows, in calls of rows of one packed length (module docstring), at most
        MAX_ROWS_PER_CALL rows each; a failed call is retried row by row so the failure is pinned to
        the rows that cause it. Answers come back in the order of `rows`."""
        out: list[str | BaseException | None] = [None] * len(rows)
        for indices in _length_groups(rows):
            for start in range(0, len(indices), MAX_ROWS_PER_CALL):
                chunk = indices[start : start + MAX_ROWS_PER_CALL]
                for i, answer in zip(chunk, self._generate_chunk([rows[i] for i in chunk]), strict=True):
                    out[i] = answer
        return out  # type: ignore[return-value]  # every index was filled

    def _generate_chunk(self, chunk: list) -> list[str | BaseException]:
        """One batched call, or row by row when it fails."""
        try:
            return list(self.adapter.generate_rows(chunk, max_new_tokens=self.config.max_new_tokens))
        except Exception:
            pass
        out: list[str | BaseException] = []
        for row in chunk:
            try:
                out.extend(self.adapter.generate_rows([row], max_new_tokens=self.config.max_new_tokens))
            except Exception as exc:
                out.append(exc)
        return out

    # ---- rows --------------------------------------------------------------------------------
    def _base_row(self, pending: _Pending, method: Method, ratio: float) -> dict[str, Any]:
        item = pending.item
        return {
            "item_id": str(item.id),
            "item_index": item.meta.get("index", pending.position),
            "family": item.family,
            "categories": item.meta.get("categories") or None,
            "problem_type": item.problem_type,
            "method": method.name,
            "ratio": ratio_key(ratio),
            "flop_equivalent_ratio": None,
            "kept_tokens": None,
            "n_video_tokens": None,
            "grid": None,
            "correct": 0,
            "score": 0.0,
            "prediction": None,
            "parsed_answer": None,
            "solution": item.solution,
            "evidence_recall": None,
            "question_sensitivity": None,
            "question_base_rate": None,
            "question_jaccard": None,
            "compression_ms": None,
            "keep": None,
            "evidence": None,
            "error": None,
            "error_kind": None,
        }

    def _fill_selection(
        self, row: dict[str, Any], prompt: EncodedPrompt, method: Method, sel: Selection
    ) -> None:
        keep = sel.keep.detach().cpu().to(torch.bool)
        n = prompt.num_video_tokens
        k = int(keep.sum())
        row.update(
            kept_tokens=k,
            n_video_tokens=n,
            grid=list(prompt.video_grid),
            compression_ms=float(sel.compression_ms),
        )
        if method.flop_equivalent is not None:
            row["flop_equivalent_ratio"] = float(method.flop_equivalent(k / n, n))
        ev = prompt.evidence_mask
        if ev is not None:
            ev = ev.detach().cpu().to(torch.bool)
            if int(ev.sum()) > 0:
                row["evidence_recall"] = float((keep & ev).sum()) / float(ev.sum())
            if self.config.keep_masks:
                row["evidence"] = encode_mask(ev)
        if self.config.keep_masks:
            row["keep"] = encode_mask(keep)

    def _score(self, row: dict[str, Any], item: QAItem) -> None:
        try:
            scored = score_answer(row["prediction"] or "", item)
        except Exception as exc:
            row.update(error=_error_text(exc), error_kind="score")
            return
        row.update(score=scored.score, correct=scored.correct, parsed_answer=scored.parsed)
        if scored.error is not None:
            row.update(error=scored.error, error_kind="unparsable")


def item_progress(progress: Progress) -> Callable[[ItemEvent], None]:
    """An `on_item` callback that moves `progress` one item at a time: items an earlier run finished
    are skipped (they do not set the pace), the others advance it, with the last item's id and the
    running count of pipeline errors (unparsable answers are answers, not errors) as its info."""
    errors = 0

    def on_item(event: ItemEvent) -> None:
        nonlocal errors
        if event.skipped:
            progress.skip()
            return
        errors += sum(1 for r in event.rows if r.get("error_kind") not in (None, "unparsable"))
        progress.advance(info=f"{event.item_id}: {len(event.rows)} rows, {errors} errors")

    return on_item


def run_evaluation(
    adapter: VideoLLM,
    source: ItemSource,
    methods: Sequence[Method],
    out: str | Path,
    config: EvalConfig | None = None,
    *,
    model: str | None = None,
    on_item: Callable[[ItemEvent], None] | None = None,
    processes: Processes | None = None,
) -> dict[str, Any]:
    """Run (or resume) an evaluation into `out`; returns the summary dict (= DIR/summary.json).

    `processes` (default: `cacovid.distributed.current()`) splits the items across the processes of
    a multi-process run; every process calls this with the same arguments.
    """
    harness = Harness(
        adapter, source, methods, out, config, model=model, on_item=on_item, processes=processes
    )
    return harness.run_all()
