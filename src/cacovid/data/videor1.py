"""Question-answer lists in the Video-R1 JSON layout.

Video-R1 stores a JSON list of objects with `path` (the video), `problem`, `options` written as
"A. red", `solution` wrapped as "<answer>A</answer>" and `problem_type`. Loading accepts both those
wrapped forms and bare ones and always yields bare `QAItem.options` / `QAItem.solution`, so every
consumer sees one convention. Saving writes the Video-R1 forms, so the files can be fed to tools that
expect real Video-R1 data. Our extras: `id`, `family` and `evidence_path` (a .npy of the (T, h, w)
bool evidence mask), all optional on load.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cacovid.types import ANSWER_FORMATS, QAItem

__all__ = [
    "PROBLEM_TYPES",
    "load_videor1",
    "parse_entry",
    "save_videor1",
    "strip_answer_tags",
    "strip_option_letter",
]

PROBLEM_TYPES = ("multiple choice", "numerical", "free-form", "OCR", "regression")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ANSWER_RE = re.compile(r"^\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
_OPTION_RE = re.compile(r"^\s*([A-Z])\s*[.)]\s*(.*?)\s*$", re.DOTALL)


def strip_answer_tags(solution: str) -> str:
    """'<answer>A</answer>' -> 'A'; text without the tags is returned stripped."""
    match = _ANSWER_RE.match(solution)
    return (match.group(1) if match else solution).strip()


def strip_option_letter(option: str, position: int) -> str:
    """'B. red' at position 1 -> 'red'.

    The prefix is removed only when its letter is the one this position would carry, so a bare option
    that merely starts with a capital and a dot (e.g. 'U.S. coast') is left alone.
    """
    match = _OPTION_RE.match(option)
    if match and position < len(LETTERS) and match.group(1) == LETTERS[position]:
        return match.group(2)
    return option.strip()


def _field(entry: dict[str, Any], index: int, name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in entry:
        raise ValueError(f"Video-R1 item {index}: missing field {name!r}")
    value = entry[name]
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"Video-R1 item {index}: field {name!r} must be {expected}, got {value!r}")
    return value


def parse_entry(entry: Any, index: int, root: Path, default_id: str) -> QAItem:
    """One row of a Video-R1 file as a QAItem (relative video paths from `root`), or a ValueError that
    names row `index`. Public so that a job over a file can check its rows one at a time and record a
    bad one without losing the rest."""
    if not isinstance(entry, dict):
        raise ValueError(f"Video-R1 item {index}: expected a JSON object, got {type(entry).__name__}")
    video = _field(entry, index, "path", str)
    problem = _field(entry, index, "problem", str)
    solution = strip_answer_tags(str(_field(entry, index, "solution", (str, int, float))))
    problem_type = entry.get("problem_type", "multiple choice")
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(
            f"Video-R1 item {index}: field 'problem_type' must be one of {PROBLEM_TYPES}, "
            f"got {problem_type!r}"
        )
    raw_options = entry.get("options", [])
    if problem_type == "multiple choice" and "options" not in entry:
        raise ValueError(f"Video-R1 item {index}: missing field 'options' (needed for multiple choice)")
    if raw_options is None:
        raw_options = []
    if not isinstance(raw_options, list) or not all(isinstance(o, str) for o in raw_options):
        raise ValueError(f"Video-R1 item {index}: field 'options' must be a list of strings")
    options = [strip_option_letter(o, i) for i, o in enumerate(raw_options)]
    if problem_type == "multiple choice":
        if not options:
            raise ValueError(f"Video-R1 item {index}: field 'options' is empty for a multiple-choice item")
        if solution not in LETTERS[: len(options)]:
            raise ValueError(
                f"Video-R1 item {index}: field 'solution' must be an option letter "
                f"A-{LETTERS[len(options) - 1]}, got {solution!r}"
            )
    if "id" in entry:
        item_id = entry["id"]
    elif "problem_id" in entry:
        item_id = f"{default_id.rsplit(':', 1)[0]}:{entry['problem_id']}"
    else:
        item_id = default_id
    meta: dict[str, Any] = {}
    evidence = None
    evidence_path = entry.get("evidence_path")
    if evidence_path is not None:
        if not isinstance(evidence_path, str):
            raise ValueError(f"Video-R1 item {index}: field 'evidence_path' must be str")
        full = root / evidence_path
        if not full.exists():
            raise ValueError(f"Video-R1 item {index}: field 'evidence_path' points to missing file {full}")
        evidence = np.load(full, allow_pickle=False)
        if evidence.ndim != 3 or evidence.dtype != np.bool_:
            raise ValueError(
                f"Video-R1 item {index}: evidence {full} must be a (T, h, w) bool array, "
                f"got {evidence.dtype} {evidence.shape}"
            )
        meta["evidence_path"] = str(full)
    family = entry.get("family")
    if family is not None and not isinstance(family, str):
        raise ValueError(f"Video-R1 item {index}: field 'family' must be str, got {family!r}")
    answer_format = entry.get("answer_format", "letter")
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(
            f"Video-R1 item {index}: field 'answer_format' must be one of {ANSWER_FORMATS}, "
            f"got {answer_format!r}"
        )
    return QAItem(
        id=str(item_id),
        problem=problem,
        options=options,
        solution=solution,
        problem_type=problem_type,
        family=family,
        video_path=str(root / video),
        evidence=evidence,
        meta=meta,
        answer_format=answer_format,
    )


def load_videor1(json_path: str | os.PathLike[str]) -> list[QAItem]:
    """Read a Video-R1 JSON list into QAItems with absolute `video_path`s.

    `path` and `evidence_path` are resolved against the JSON file's folder. Items without an `id`
    get "<file stem>:<problem_id>" or "<file stem>:<index>". Raises FileNotFoundError for a missing
    JSON file and ValueError, naming the item index and field, for malformed entries.
    """
    json_path = Path(json_path)
    if not json_path.exists():
        raise FileNotFoundError(f"Video-R1 JSON not found: {str(json_path)!r}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{json_path} must hold a JSON list of items, got {type(data).__name__}")
    root = json_path.resolve().parent
    return [parse_entry(entry, i, root, f"{json_path.stem}:{i}") for i, entry in enumerate(data)]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "item"


def save_videor1(
    items: Sequence[QAItem], json_path: str | os.PathLike[str], *, evidence_dir: str = "evidence"
) -> Path:
    """Write QAItems as a Video-R1 JSON list and return its path.

    Every item needs a `video_path` (the video must already be on disk; see `write_video`); it is
    stored relative to the JSON file's folder. Options are written "A. red" and the solution
    "<answer>A</answer>", like Video-R1. Items with an `evidence` mask get it saved as
    `<evidence_dir>/<index>_<id>.npy` beside the JSON and referenced by `evidence_path`.
    """
    json_path = Path(json_path)
    root = json_path.resolve().parent
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, item in enumerate(items):
        if not item.video_path:
            raise ValueError(f"item {i} ({item.id!r}) has no video_path; write its video first")
        if item.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"item {i} ({item.id!r}): unknown problem_type {item.problem_type!r}")
        video = Path(item.video_path)
        if not video.is_absolute():
            video = Path.cwd() / video
        options = [f"{LETTERS[j]}. {o}" for j, o in enumerate(item.options)]
        entry: dict[str, Any] = {
            "id": item.id,
            "problem_id": i,
            "data_type": "video",
            "problem_type": item.problem_type,
            "problem": item.problem,
            "options": options,
            "solution": f"<answer>{item.solution}</answer>",
            "path": Path(os.path.relpath(video, root)).as_posix(),
        }
        if item.family is not None:
            entry["family"] = item.family
        if item.answer_format != "letter":  # a cacovid extension; Video-R1 itself asks for letters
            entry["answer_format"] = item.answer_format
        if item.evidence is not None:
            evidence = np.asarray(item.evidence)
            if evidence.ndim != 3 or evidence.dtype != np.bool_:
                raise ValueError(
                    f"item {i} ({item.id!r}): evidence must be a (T, h, w) bool array, "
                    f"got {evidence.dtype} {evidence.shape}"
                )
            rel = Path(evidence_dir) / f"{i:06d}_{_safe_name(item.id)}.npy"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(root / rel, evidence, allow_pickle=False)
            entry["evidence_path"] = rel.as_posix()
        entries.append(entry)
    json_path.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    return json_path
