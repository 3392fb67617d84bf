"""MLVU, its dev and its test split (multiple-choice tasks only).

The split is always named (`mlvu-dev:ROOT`, `mlvu-test:ROOT`): the two splits differ in tasks,
option counts (dev asks with 4, test with up to 6 options) and scores, and a result must say which
one it is.

Dev — source: the MLVU GitHub repository (annotation) and the `MLVU/MVLU` hub data set (videos):
`json/1_plotQA.json` … `json/7_topic_reasoning.json`, one file per multiple-choice task, each a list
of rows with `video`, `duration`, `question`, `candidates` (option texts), `answer` (the correct
option's text) and `question_type` (the task); the videos of `json/N_task.json` are in
`video/N_task/`. The two generation tasks (`8_sub_scene.json`, `9_summary.json`) are not multiple
choice and are skipped. The hub's `MLVU/` folder level may be kept or dropped.

Test — source: the `MLVU/MLVU_Test` hub data set: `test-ground-truth/test_mcq_gt.json`, one list of
rows with `question_id`, `question_type`, `video`, `duration`, `question`, `candidates` and `answer`
(the option's text); the videos are in `video/`.

Prompt: MLVU's own (its evaluation code): "Carefully watch this video and pay attention to every
detail. Based on your observations, select the best option that accurately addresses the question.",
"Question: …", "Options:", "(A) …" per option, "Only give the best option." MLVU's code also opens
the answer with "Best Option: (", which a chat prompt cannot do; the scorer reads "(B) …" and "B"
alike. Category: the task (`question_type`).
"""

from __future__ import annotations

from pathlib import Path

from cacovid.data.benchmarks.common import (
    LETTERS,
    AnnotationError,
    BenchmarkItem,
    Row,
    bracketed_options_prompt,
    make_item,
    read_json,
)

__all__ = ["DEV_TASK_FILES", "SPLITS", "load_mlvu", "mlvu_prompt"]

NAME = "MLVU"
SPLITS = ("dev", "test")
# The dev split's multiple-choice task files, in MLVU's order, and its generation tasks (skipped).
DEV_TASK_FILES = (
    "1_plotQA.json",
    "2_needle.json",
    "3_ego.json",
    "4_count.json",
    "5_order.json",
    "6_anomaly_reco.json",
    "7_topic_reasoning.json",
)
DEV_GENERATION_FILES = ("8_sub_scene.json", "9_summary.json")
TEST_ANNOTATION = "test-ground-truth/test_mcq_gt.json"

INSTRUCTION = (
    "Carefully watch this video and pay attention to every detail. Based on your observations, "
    "select the best option that accurately addresses the question."
)


def mlvu_prompt(question: str, options: list[str]) -> str:
    """MLVU's prompt for a question and its option texts."""
    return bracketed_options_prompt(INSTRUCTION, question, options)


def _answer(row: Row, options: list[str]) -> str:
    """MLVU stores the correct option's text; a bare letter is accepted where no option reads so."""
    answer = row.get("answer", (str, int, float))
    text = str(answer)
    if text in options or text.strip() in [o.strip() for o in options]:
        return row.answer_from_text(text, options)
    if len(text.strip()) == 1 and text.strip().upper() in LETTERS:
        return row.answer_letter(text, len(options))
    return row.answer_from_text(text, options)  # raises: names no option


def _item(row: Row, video: Path, item_id: str) -> BenchmarkItem:
    question = row.text("question")
    options = row.options("candidates")
    task = row.text("question_type")
    return make_item(
        item_id=item_id,
        question=question,
        options=options,
        solution=_answer(row, options),
        prompt=mlvu_prompt(question, options),
        video_path=video,
        benchmark="mlvu",
        categories={"task": task},
        source=row.path,
        row=row.index,
        duration=row.get("duration", (int, float), default=None),
    )


def _rows(path: Path) -> list:
    data = read_json(path, NAME)
    if not isinstance(data, list):
        raise AnnotationError(f"{NAME}: {path} must hold a JSON list of rows, got {type(data).__name__}")
    return data


def _dev_root(root: Path) -> Path:
    if (root / "json").is_dir():
        return root
    if (root / "MLVU" / "json").is_dir():
        return root / "MLVU"
    raise AnnotationError(f"{NAME} dev: no json/ folder of task files under {root} (nor {root / 'MLVU'})")


def load_mlvu_dev(root: str | Path) -> list[BenchmarkItem]:
    """The dev split's multiple-choice items, task by task in MLVU's order."""
    base = _dev_root(Path(root))
    json_dir = base / "json"
    known = set(DEV_TASK_FILES) | set(DEV_GENERATION_FILES)
    strangers = sorted(p.name for p in json_dir.glob("*.json") if p.name not in known)
    if strangers:
        raise AnnotationError(
            f"{NAME} dev: {json_dir / strangers[0]} is not an MLVU dev task file "
            f"(expected {', '.join(DEV_TASK_FILES)})"
        )
    items = []
    for name in DEV_TASK_FILES:
        path = json_dir / name
        if not path.is_file():
            continue
        stem = path.stem
        for i, data in enumerate(_rows(path)):
            row = Row(data, path, i, f"{NAME} dev")
            video = base / "video" / stem / row.text("video")
            items.append(_item(row, video, f"{stem}:{i}"))
    if not items:
        raise AnnotationError(
            f"{NAME} dev: no multiple-choice task file in {json_dir} (expected {', '.join(DEV_TASK_FILES)})"
        )
    return items


def load_mlvu_test(root: str | Path) -> list[BenchmarkItem]:
    """The test split's multiple-choice items, with the published ground truth."""
    root = Path(root)
    path = root / TEST_ANNOTATION
    if not path.is_file():
        raise AnnotationError(f"{NAME} test: annotation {path} not found (expected {TEST_ANNOTATION})")
    items = []
    for i, data in enumerate(_rows(path)):
        row = Row(data, path, i, f"{NAME} test")
        question_id = row.get("question_id", (str, int))
        items.append(_item(row, root / "video" / row.text("video"), str(question_id)))
    if not items:
        raise AnnotationError(f"{NAME} test: {path} holds no rows")
    return items


def load_mlvu(root: str | Path, split: str) -> list[BenchmarkItem]:
    """MLVU items of `split` ("dev" or "test"): the split is never implied."""
    if split == "dev":
        return load_mlvu_dev(root)
    if split == "test":
        return load_mlvu_test(root)
    raise ValueError(f"{NAME}: unknown split {split!r}; name one of {SPLITS} (mlvu-dev:ROOT, mlvu-test:ROOT)")
