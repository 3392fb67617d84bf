"""LongVideoBench, validation split, video only (no interleaved subtitles).

Source: the `longvideobench/LongVideoBench` hub data set: `lvb_val.json`, a list of rows with `id`,
`video_id`, `video_path` (relative to `videos/`), `question`, `candidates` (option texts),
`correct_choice` (the 0-based option number), `duration_group` (15, 60, 600 or 3600: the upper
bound in seconds of the video's length group), `question_category`, `duration` and subtitle fields
(unused here). The test split (`lvb_test_wo_gt.json`) has no answers and is not read.

Prompt: the question, then the options as "A. …" lines, then "Answer with the option's letter from
the given choices directly." (LongVideoBench's video-only prompt, as lmms-eval's
`longvideobench_val_v` writes it). Categories: the duration group (the benchmark's headline
breakdown: 8-15 s, 15-60 s, 180-600 s, 900-3600 s) and the question category.
"""

from __future__ import annotations

from pathlib import Path

from cacovid.data.benchmarks.common import (
    LETTERS,
    AnnotationError,
    BenchmarkItem,
    Row,
    make_item,
    read_json,
)

__all__ = ["ANNOTATION", "DURATION_GROUPS", "load_longvideobench", "longvideobench_prompt"]

NAME = "LongVideoBench"
ANNOTATION = "lvb_val.json"
VIDEO_DIR = "videos"
# duration_group (upper bound, seconds) → the benchmark's name for the group.
DURATION_GROUPS = {8: "0-8s", 15: "8-15s", 60: "15-60s", 600: "180-600s", 3600: "900-3600s"}


def longvideobench_prompt(question: str, options: list[str]) -> str:
    """LongVideoBench's video-only prompt for a question and its option texts."""
    lines = [question, *(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))]
    lines.append("Answer with the option's letter from the given choices directly.")
    return "\n".join(lines)


def _duration_group(row: Row) -> str:
    group = row.get("duration_group", (int, float, str))
    try:
        seconds = int(float(group))
    except ValueError:
        raise row.error(f"field 'duration_group' must be a number of seconds, got {group!r}") from None
    return DURATION_GROUPS.get(seconds, f"<={seconds}s")


def load_longvideobench(root: str | Path) -> list[BenchmarkItem]:
    """The validation questions, in annotation order; `root` holds lvb_val.json and videos/
    (or is lvb_val.json itself)."""
    root = Path(root)
    path = root if root.is_file() else root / ANNOTATION
    data = read_json(path, NAME)
    if not isinstance(data, list):
        raise AnnotationError(f"{NAME}: {path} must hold a JSON list of rows, got {type(data).__name__}")
    videos = path.parent / VIDEO_DIR
    items = []
    for i, entry in enumerate(data):
        row = Row(entry, path, i, NAME)
        question = row.text("question")
        options = row.options("candidates")
        answer = row.answer_from_index(row.get("correct_choice", (int, str)), len(options), "correct_choice")
        item_id = row.get("id", (str, int), default=f"lvb:{i}")
        category = row.get("question_category", str, default=None)
        items.append(
            make_item(
                item_id=str(item_id),
                question=question,
                options=options,
                solution=answer,
                prompt=longvideobench_prompt(question, options),
                video_path=videos / row.text("video_path"),
                benchmark="longvideobench",
                categories={"duration_group": _duration_group(row), "question_category": category},
                source=path,
                row=i,
                duration=row.get("duration", (int, float), default=None),
            )
        )
    if not items:
        raise AnnotationError(f"{NAME}: {path} holds no rows")
    return items
