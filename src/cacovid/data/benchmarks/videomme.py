"""Video-MME (short, medium and long videos; frames only, no subtitles).

Source: the `lmms-lab/Video-MME` data set on the Hugging Face hub. Its annotation is
`videomme/test-00000-of-00001.parquet`, one row per question with `video_id`, `duration`
(short / medium / long), `domain`, `sub_category`, `videoID` (the video's file name without
extension), `question_id`, `task_type`, `question`, `options` (four strings written "A. …") and
`answer` (a letter); the videos unpack into `data/<videoID>.mp4`.

Parquet needs `pyarrow` (or `pandas`), which the package does not depend on, so the same rows are
also read from JSON (a list of those objects, e.g. what `pandas.read_parquet(...).to_json(path,
orient="records")` writes), at `videomme.json` or `videomme/test-00000-of-00001.json`.

Prompt: Video-MME's own frames-only instruction ("Select the best answer to the following
multiple-choice question based on the video. Respond with only the letter (A, B, C, or D) of the
correct option.", the question, the options as written, "The best answer is:"), as the benchmark's
paper and the lmms-eval task without subtitles write it. Categories: duration, domain, task type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cacovid.data.benchmarks.common import (
    LETTERS,
    AnnotationError,
    BenchmarkItem,
    Row,
    letter_list,
    make_item,
    read_json,
)
from cacovid.data.videor1 import strip_option_letter

__all__ = ["ANNOTATION_FILES", "DURATIONS", "load_videomme", "videomme_prompt"]

NAME = "Video-MME"
DURATIONS = ("short", "medium", "long")
# Looked for in this order under the root (the hub's parquet first, then JSON forms of it).
ANNOTATION_FILES = (
    "videomme/test-00000-of-00001.parquet",
    "videomme/test-00000-of-00001.json",
    "videomme.json",
)
VIDEO_DIR = "data"
VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv", ".webm")


def videomme_prompt(question: str, options: list[str]) -> str:
    """Video-MME's frames-only prompt for a question and its bare option texts."""
    lines = [
        "Select the best answer to the following multiple-choice question based on the video. "
        f"Respond with only the letter ({letter_list(len(options))}) of the correct option.",
        question,
        *(f"{LETTERS[i]}. {o}" for i, o in enumerate(options)),
        "The best answer is:",
    ]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """numpy arrays and scalars (what pandas hands back for list columns) → plain Python."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a parquet file through pyarrow (or pandas); a clear error when neither exists."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        return pq.read_table(path).to_pylist()
    try:
        import pandas as pd
    except ImportError:
        raise AnnotationError(
            f"{NAME}: reading {path} needs pyarrow or pandas (pip install pyarrow); or give the "
            f"same rows as JSON at {path.parent.parent / 'videomme.json'} "
            "(pandas.read_parquet(PATH).to_json(JSON, orient='records') converts it once)"
        ) from None
    return [{k: _plain(v) for k, v in r.items()} for r in pd.read_parquet(path).to_dict("records")]


def find_annotation(root: Path) -> Path:
    """The annotation file under `root` (or `root` itself when it is a file)."""
    if root.is_file():
        return root
    if not root.is_dir():
        raise AnnotationError(f"{NAME}: {root} is neither a folder nor an annotation file")
    for rel in ANNOTATION_FILES:
        if (root / rel).is_file():
            return root / rel
    raise AnnotationError(f"{NAME}: no annotation under {root} (looked for {', '.join(ANNOTATION_FILES)})")


def _video_root(annotation: Path) -> Path:
    folder = annotation.parent
    return folder.parent if folder.name == "videomme" else folder


def _video_path(videos: Path, video_id: str) -> Path:
    for suffix in VIDEO_SUFFIXES:
        candidate = videos / f"{video_id}{suffix}"
        if candidate.is_file():
            return candidate
    return videos / f"{video_id}.mp4"  # missing: the evaluation records it for this item


def _read_rows(path: Path) -> list[Any]:
    if path.suffix == ".parquet":
        return read_parquet_rows(path)
    data = read_json(path, NAME)
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        # pandas' default to_json layout ("columns"): {field: {row number: value}}
        keys = list(next(iter(data.values())))
        if all(list(v) == keys for v in data.values()):
            return [{field: column[k] for field, column in data.items()} for k in keys]
    if not isinstance(data, list):
        raise AnnotationError(
            f"{NAME}: {path} must hold a JSON list of question rows, got {type(data).__name__}"
        )
    return data


def _item(row: Row, videos: Path) -> BenchmarkItem:
    video_id = row.text("videoID")
    duration = row.text("duration")
    if duration not in DURATIONS:
        raise row.error(f"field 'duration' must be one of {DURATIONS}, got {duration!r}")
    raw = row.options("options")
    options = [strip_option_letter(o, i) for i, o in enumerate(raw)]
    answer = row.answer_letter(row.get("answer", str), len(options))
    question = row.text("question")
    question_id = row.get("question_id", (str, int), default=None)
    item_id = str(question_id) if question_id is not None else f"videomme:{row.index}"
    return make_item(
        item_id=item_id,
        question=question,
        options=options,
        solution=answer,
        prompt=videomme_prompt(question, options),
        video_path=_video_path(videos, video_id),
        benchmark="videomme",
        categories={
            "duration": duration,
            "domain": row.text("domain"),
            "task_type": row.text("task_type"),
        },
        source=row.path,
        row=row.index,
        video_id=video_id,
    )


def load_videomme(root: str | Path, durations: tuple[str, ...] = DURATIONS) -> list[BenchmarkItem]:
    """Video-MME items of the given durations, in annotation order.

    `root` is the data set's folder (annotation plus `data/` with the videos) or the annotation file
    itself. Videos are not opened here: a missing one is the evaluation's per-item error.
    """
    unknown = [d for d in durations if d not in DURATIONS]
    if unknown:
        raise ValueError(f"{NAME}: unknown duration {unknown[0]!r}; expected one of {DURATIONS}")
    path = find_annotation(Path(root))
    videos = _video_root(path) / VIDEO_DIR
    items = []
    for i, data in enumerate(_read_rows(path)):
        item = _item(Row(data, path, i, NAME), videos)
        if item.meta["categories"]["duration"] in durations:
            items.append(item)
    if not items:
        raise AnnotationError(f"{NAME}: {path} holds no {'/'.join(durations)} questions")
    return items
