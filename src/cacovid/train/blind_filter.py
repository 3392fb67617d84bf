"""The blind test (docs/method.md §5) as a resumable job over a Video-R1 JSON file.

Why a job of its own: the trainer already drops the items its frozen host answers correctly with no
video tokens, but on a real training set (Video-R1 holds about 260 k questions) that pass is hours of
host time, it is redone by every training run, and a crash loses it. `cacovid filter` runs it once,
writes the surviving rows as a new Video-R1 JSON that `cacovid train --data … --no-blind-filter`
reads, and keeps a record of every decision so that an interrupted run goes on where it stopped.

The per-item blind answer is the trainer's own (`validation.blind_answers_correct`: every video token
dropped, text and separators kept, accuracy reward ≥ 1), so a filtered file and the trainer's filter
agree item for item.

Files, for an output `OUT.json`:
- `OUT.json`: the kept rows, in input order, each the input's JSON object unchanged. When `OUT.json`
  lives in another folder than the input, relative `path` and `evidence_path` fields are rebased onto
  the new folder (the one change; the summary says so), so the videos are still found.
- `OUT.progress.jsonl`: append-only. Line 1 is the header: the input's path and SHA-256, the model,
  the answer length. Every further line is one row's decision, `{"index", "id", "decision":
  keep|drop|failed, "problem_type", "data_source", "error"}`; a later line for the same index wins
  (`retry_failed`). A rerun refuses a header whose input differs in content (SHA-256: another file, or
  the same file edited, whose row indices may no longer match), model or answer length; the error
  names both input files. The same content moved to another path is accepted.
- `OUT.summary.json`: counts kept / dropped / failed, overall, per `problem_type` and per
  `data_source`, and every failure with its row index.

A bad row never stops the run: a row that is not a valid Video-R1 entry, or whose video cannot be
decoded, is recorded as `failed` with its index and the reason, and left out of the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cacovid.data.videor1 import PROBLEM_TYPES, parse_entry
from cacovid.train.validation import blind_answers_correct
from cacovid.types import QAItem

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM

__all__ = [
    "DECISIONS",
    "BlindFilterJob",
    "FilterPaths",
    "RowEvent",
    "file_sha256",
    "filter_paths",
]

DECISIONS = ("keep", "drop", "failed")
FORMAT = "cacovid-blind-filter/1"
UNKNOWN = "unknown"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks: training files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FilterPaths:
    """The three files of one filter run (see the module docstring)."""

    output: Path
    progress: Path
    summary: Path


def filter_paths(output: str | os.PathLike[str]) -> FilterPaths:
    """`OUT.json` → (OUT.json, OUT.progress.jsonl, OUT.summary.json), all in OUT.json's folder."""
    output = Path(output)
    if output.suffix.lower() != ".json":
        raise ValueError(f"the filtered file must be a .json file, got {str(output)!r}")
    stem = output.with_suffix("")
    return FilterPaths(
        output, stem.with_name(stem.name + ".progress.jsonl"), stem.with_name(stem.name + ".summary.json")
    )


@dataclass
class RowEvent:
    """What the progress callback gets per row: its index, its decision (None while only skipped
    because an earlier run decided it), and the error of a failed row."""

    index: int
    decision: str | None
    skipped: bool = False
    error: str | None = None


@dataclass
class _Pending:
    index: int
    entry: Any
    item: QAItem


@dataclass
class _Progress:
    header: dict[str, Any] | None = None
    decisions: dict[int, dict[str, Any]] = field(default_factory=dict)


def _error_text(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"[:500]


def _label(entry: Any, key: str, default: str) -> str:
    """A row's `problem_type` / `data_source` for the summary, whatever the row holds."""
    if not isinstance(entry, dict):
        return UNKNOWN
    value = entry.get(key, default)
    return value if isinstance(value, str) and value else UNKNOWN


def read_rows(path: Path) -> list[Any]:
    """The JSON list of a Video-R1 file, rows unparsed (each is checked when its turn comes)."""
    if not path.is_file():
        raise FileNotFoundError(f"Video-R1 JSON not found: {str(path)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of items, got {type(data).__name__}")
    return data


def read_progress(path: Path) -> _Progress:
    """The header and latest decision per row of a progress file (missing file: empty).

    A torn last line (the run was killed mid-write) is cut off; a bad line before it is an error.
    """
    progress = _Progress()
    if not path.is_file():
        return progress
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    good_end = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if number == len(lines) or all(not rest.strip() for rest in lines[number:]):
                with open(path, "r+b") as fh:  # torn tail: drop it, the row is simply redone
                    fh.truncate(good_end)
                break
            raise ValueError(f"{path}: line {number} is not a JSON object ({exc})") from exc
        good_end += len(line) + 1
        if record.get("format") == FORMAT:
            progress.header = record
        elif isinstance(record.get("index"), int) and record.get("decision") in DECISIONS:
            progress.decisions[record["index"]] = record
        else:
            raise ValueError(f"{path}: line {number} is neither the header nor a row decision")
    if progress.decisions and progress.header is None:
        raise ValueError(f"{path} holds row decisions but no header: delete it to start over")
    return progress


def _rebase(entry: Any, source_root: Path, target_root: Path) -> Any:
    """The row with relative `path` / `evidence_path` rewritten to resolve from `target_root`."""
    if source_root == target_root or not isinstance(entry, dict):
        return entry
    out = dict(entry)
    for key in ("path", "evidence_path"):
        value = out.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            out[key] = Path(os.path.relpath(source_root / value, target_root)).as_posix()
    return out


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class BlindFilterJob:
    """One blind-filter run from a Video-R1 JSON file to its filtered copy (module docstring).

    `model` names the host in the progress header (a rerun with another host is refused);
    `batch_size` rows share one batched answer call; `max_new_tokens` bounds the blind answer (the
    trainer uses `TrainConfig.max_new_tokens`, 4). `retry_failed` decides failed rows again.
    `on_row` is called once per row, in input order for rows decided earlier and in answer order for
    the rest.
    """

    def __init__(
        self,
        adapter: VideoLLM,
        input_json: str | os.PathLike[str],
        output_json: str | os.PathLike[str],
        *,
        model: str,
        batch_size: int = 16,
        max_new_tokens: int = 4,
        retry_failed: bool = False,
        on_row: Callable[[RowEvent], None] | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.adapter = adapter
        self.input = Path(input_json).resolve()
        self.paths = filter_paths(Path(output_json).resolve())
        if self.paths.output == self.input:
            raise ValueError(f"the filtered file must not overwrite its input {self.input}")
        self.model = model
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.retry_failed = retry_failed
        self.on_row = on_row
        self.rows = read_rows(self.input)
        self.header = {
            "format": FORMAT,
            "input": str(self.input),
            "input_sha256": file_sha256(self.input),
            "n_rows": len(self.rows),
            "model": model,
            "max_new_tokens": max_new_tokens,
        }
        self.progress = read_progress(self.paths.progress)
        self._check_header(self.progress.header)

    def _check_header(self, old: dict[str, Any] | None) -> None:
        if old is None:
            return
        where = self.paths.progress
        if old.get("input_sha256") != self.header["input_sha256"]:
            raise ValueError(
                f"{where} records a filter run over {old.get('input')} (sha256 "
                f"{str(old.get('input_sha256'))[:12]}…), not over {self.input} (sha256 "
                f"{self.header['input_sha256'][:12]}…): choose another output file, or delete {where} "
                "to start over"
            )
        for key in ("model", "max_new_tokens"):
            if old.get(key) != self.header[key]:
                raise ValueError(
                    f"{where} was written with {key} {old.get(key)!r}, not {self.header[key]!r}: "
                    "decisions would not be comparable; choose another output file"
                )

    # ---- the run -----------------------------------------------------------------------------
    def pending_indices(self) -> list[int]:
        """Rows not yet decided (failed ones too, with `retry_failed`)."""
        decided = self.progress.decisions
        return [
            i
            for i in range(len(self.rows))
            if i not in decided or (self.retry_failed and decided[i]["decision"] == "failed")
        ]

    def run(self) -> dict[str, Any]:
        """Decide every pending row, then write the filtered file and the summary; returns the summary."""
        pending = set(self.pending_indices())
        self.paths.progress.parent.mkdir(parents=True, exist_ok=True)
        with open(self.paths.progress, "a", encoding="utf-8") as log:
            if self.progress.header is None:
                self._append(log, self.header)
                self.progress.header = self.header
            batch: list[_Pending] = []
            for index, entry in enumerate(self.rows):
                if index not in pending:
                    self._emit(RowEvent(index, self.progress.decisions[index]["decision"], skipped=True))
                    continue
                try:
                    item = parse_entry(entry, index, self.input.parent, f"{self.input.stem}:{index}")
                except ValueError as exc:
                    self._decide(log, index, entry, None, "failed", str(exc))
                    continue
                batch.append(_Pending(index, entry, item))
                if len(batch) >= self.batch_size:
                    self._answer(log, batch)
                    batch = []
            if batch:
                self._answer(log, batch)
        return self.finish()

    def _answer(self, log, batch: Sequence[_Pending]) -> None:
        """Blind answers for a batch; a failing batch is retried row by row to pin the bad row."""
        try:
            correct = self._blind(batch)
        except Exception:
            for pending in batch:
                try:
                    [ok] = self._blind([pending])
                except Exception as exc:  # an unreadable video must not stop the run
                    self._decide(log, pending.index, pending.entry, pending.item, "failed", _error_text(exc))
                else:
                    self._decide(log, pending.index, pending.entry, pending.item, "drop" if ok else "keep")
            return
        for pending, ok in zip(batch, correct, strict=True):
            self._decide(log, pending.index, pending.entry, pending.item, "drop" if ok else "keep")

    def _blind(self, batch: Sequence[_Pending]) -> list[bool]:
        return blind_answers_correct(
            self.adapter,
            [p.item for p in batch],
            batch_size=len(batch),
            max_new_tokens=self.max_new_tokens,
        )

    def _decide(
        self, log, index: int, entry: Any, item: QAItem | None, decision: str, error: str | None = None
    ) -> None:
        record = {
            "index": index,
            "id": item.id if item is not None else None,
            "decision": decision,
            "problem_type": _label(entry, "problem_type", PROBLEM_TYPES[0]),
            "data_source": _label(entry, "data_source", UNKNOWN),
            "error": error,
        }
        self._append(log, record)
        self.progress.decisions[index] = record
        self._emit(RowEvent(index, decision, error=error))

    @staticmethod
    def _append(log, record: dict[str, Any]) -> None:
        log.write(json.dumps(record, ensure_ascii=False) + "\n")
        log.flush()

    def _emit(self, event: RowEvent) -> None:
        if self.on_row is not None:
            self.on_row(event)

    # ---- outputs -----------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Write the filtered file and the summary from the decisions recorded so far."""
        decisions = self.progress.decisions
        missing = [i for i in range(len(self.rows)) if i not in decisions]
        if missing:
            raise ValueError(f"{len(missing)} rows are still undecided (first: row {missing[0]}); run again")
        target = self.paths.output.parent
        kept = [
            _rebase(self.rows[i], self.input.parent, target)
            for i in range(len(self.rows))
            if decisions[i]["decision"] == "keep"
        ]
        _write_json_atomic(self.paths.output, kept)
        summary = self.summary()
        _write_json_atomic(self.paths.summary, summary)
        return summary

    def summary(self) -> dict[str, Any]:
        """Counts per decision, overall, per problem_type and per data_source, and the failures."""
        records = [self.progress.decisions[i] for i in sorted(self.progress.decisions)]
        totals = Counter(r["decision"] for r in records)

        def grouped(key: str) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for r in records:
                counts = out.setdefault(r[key], dict.fromkeys(DECISIONS, 0))
                counts[r["decision"]] += 1
            return {
                k: {"kept": c["keep"], "dropped": c["drop"], "failed": c["failed"]}
                for k, c in sorted(out.items())
            }

        return {
            "input": str(self.input),
            "input_sha256": self.header["input_sha256"],
            "output": str(self.paths.output),
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "paths_rebased": self.paths.output.parent != self.input.parent,
            "n_rows": len(self.rows),
            "kept": totals["keep"],
            "dropped": totals["drop"],
            "failed": totals["failed"],
            "per_problem_type": grouped("problem_type"),
            "per_data_source": grouped("data_source"),
            "failures": [
                {"index": r["index"], "id": r["id"], "error": r["error"]}
                for r in records
                if r["decision"] == "failed"
            ],
        }
