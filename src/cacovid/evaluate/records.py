"""The files an evaluation leaves behind, and how to read and append them safely.

Why a module of its own: `items.jsonl` is what resume, summaries, reports and outside checks all read,
so its layout, its row key and its compact keep-mask encoding are defined once, here.

Files in a results directory:
- `items.jsonl`: one JSON object per (item, method, ratio), append-only (with several processes,
  process 0 appends the rows of all of them; docs/scale-out.md). A row is identified by
  `row_key` = (item_id, method, ratio rounded to 6 digits); when a key appears twice (a retried
  error), the later row wins.
  Rows of benchmark items also carry `categories` (axis → value, e.g. {"duration": "short",
  "task_type": "OCR Problems"}) for the per-category accuracy of `summary.py`; rows without them
  (older files, synthetic data) simply have no categories.
- `run.json`: what the run evaluated (model, dataset, world config, seed, ...), so a resumed run can
  refuse to mix rows from a different setting and a report can regenerate an item's frames.
- `summary.json`, `efficiency.json`: derived; see `summary.py` and `efficiency.py`.

Keep masks are stored as `keep`: base64 of the mask packed 8 tokens per byte (`np.packbits`,
big-endian bit order, zero padded), with `n_video_tokens` and `grid` [T, H, W] beside them; the
ground-truth evidence mask, when known, is stored the same way as `evidence`. 784 tokens take 132
characters, so every row carries its mask and heat-maps never need to re-run a selector.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ITEMS_FILE = "items.jsonl"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
EFFICIENCY_FILE = "efficiency.json"

# Error kinds recorded in rows: exceptions in the pipeline vs. an answer that names no option.
ERROR_KINDS = ("encode", "select", "generate", "score", "unparsable")


def ratio_key(ratio: float) -> float:
    """A ratio as stored and compared (6 digits), so 0.1 typed twice is the same key."""
    return round(float(ratio), 6)


def row_key(row: dict[str, Any]) -> tuple[str, str, float]:
    """(item_id, method, ratio): the identity of a row, what resume checks for."""
    return (str(row["item_id"]), str(row["method"]), ratio_key(row["ratio"]))


def encode_mask(mask: torch.Tensor | np.ndarray) -> str:
    """(N,) bool mask → compact base64 text (8 tokens per byte)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask, dtype=bool).reshape(-1)
    return base64.b64encode(np.packbits(arr).tobytes()).decode("ascii")


def decode_mask(text: str, n: int) -> np.ndarray:
    """Inverse of `encode_mask`: (n,) bool array."""
    raw = np.frombuffer(base64.b64decode(text.encode("ascii")), dtype=np.uint8)
    if raw.size * 8 < n:
        raise ValueError(f"mask text holds {raw.size * 8} bits, need {n}")
    return np.unpackbits(raw)[:n].astype(bool)


def repair_tail(path: Path) -> int:
    """Drop a partial last line (a write cut by a kill), so appends start on a fresh line.

    Returns the number of bytes removed.
    """
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Walk back to the last newline (rows are small; read the tail in one go).
        tail = min(size, 1 << 20)
        f.seek(size - tail)
        chunk = f.read(tail)
        cut = chunk.rfind(b"\n")
        new_size = size - tail + cut + 1 if cut >= 0 else (0 if tail == size else size)
        f.truncate(new_size)
        return size - new_size


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of an items.jsonl file; a partial last line (interrupted write) is skipped."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the unterminated last line of a killed write
                continue
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
        if not isinstance(row, dict) or not {"item_id", "method", "ratio"} <= row.keys():
            raise ValueError(f"{path}: line {i + 1} is not a result row (needs item_id, method, ratio)")
        yield row


def read_rows(path: Path | str) -> list[dict[str, Any]]:
    """All rows of an items.jsonl file (or of `DIR/items.jsonl` when given a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / ITEMS_FILE
    return list(iter_rows(path))


def latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key, the last one written, in first-written order."""
    by_key: dict[tuple[str, str, float], dict[str, Any]] = {}
    for row in rows:
        key = row_key(row)
        by_key.pop(key, None)
        by_key[key] = row
    return list(by_key.values())


class RowWriter:
    """Appends rows to items.jsonl; `flush` makes them durable (called once per item)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(path)
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._f.write(json.dumps(row, allow_nan=False, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.flush()
            self._f.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so a kill never leaves half a summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it does not exist."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data
