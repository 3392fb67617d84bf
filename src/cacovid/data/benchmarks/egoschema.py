"""EgoSchema, the public 500-question subset.

Source: the EgoSchema GitHub repository: `questions.json` (all 5031 questions: rows with `q_uid`,
`question` and `option 0` … `option 4`) and `subset_answers.json` (an object mapping the subset's
500 `q_uid`s to the correct option number); the videos (`<q_uid>.mp4`) go in `videos/`. The other
4531 answers are withheld by the benchmark, so only the subset is loaded.

Prompt: the question, the options as "A. …" lines, then "Answer with the option's letter from the
given choices directly." (lmms-eval's `egoschema_subset`). No categories: EgoSchema reports one
accuracy.
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

__all__ = ["N_OPTIONS", "egoschema_prompt", "load_egoschema"]

NAME = "EgoSchema"
QUESTIONS = "questions.json"
ANSWERS = "subset_answers.json"
VIDEO_DIR = "videos"
N_OPTIONS = 5


def egoschema_prompt(question: str, options: list[str]) -> str:
    """EgoSchema's prompt for a question and its option texts."""
    lines = [question, *(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))]
    lines.append("Answer with the option's letter from the given choices directly.")
    return "\n".join(lines)


def _answer(value: object, uid: str, n_options: int, path: Path) -> str:
    """The letter of a subset answer (an option number), checked against the question's options."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_options:
        raise AnnotationError(
            f"{NAME}: {path}, q_uid {uid!r}: the answer must be an option number 0 to "
            f"{n_options - 1}, got {value!r}"
        )
    return LETTERS[value]


def load_egoschema(root: str | Path) -> list[BenchmarkItem]:
    """The subset's questions, in the order of questions.json."""
    root = Path(root)
    answers = read_json(root / ANSWERS, NAME)
    if not isinstance(answers, dict) or not answers:
        raise AnnotationError(
            f"{NAME}: {root / ANSWERS} must hold a JSON object mapping q_uid to the correct option "
            f"number, got {type(answers).__name__}"
        )
    questions_path = root / QUESTIONS
    questions = read_json(questions_path, NAME)
    if not isinstance(questions, list):
        raise AnnotationError(
            f"{NAME}: {questions_path} must hold a JSON list of questions, got {type(questions).__name__}"
        )
    items = []
    seen: set[str] = set()
    for i, entry in enumerate(questions):
        row = Row(entry, questions_path, i, NAME)
        uid = row.text("q_uid")
        if uid not in answers:
            continue
        if uid in seen:
            raise row.error(f"q_uid {uid!r} appears twice")
        seen.add(uid)
        options = row.check_options([row.text(f"option {k}") for k in range(N_OPTIONS)], "option 0..4")
        question = row.text("question")
        answer = _answer(answers[uid], uid, len(options), root / ANSWERS)
        items.append(
            make_item(
                item_id=uid,
                question=question,
                options=options,
                solution=answer,
                prompt=egoschema_prompt(question, options),
                video_path=root / VIDEO_DIR / f"{uid}.mp4",
                benchmark="egoschema",
                categories={},
                source=questions_path,
                row=i,
            )
        )
    missing = sorted(set(answers) - seen)
    if missing:
        raise AnnotationError(
            f"{NAME}: {root / ANSWERS} names {len(missing)} q_uid(s) that {questions_path} lacks, "
            f"e.g. {missing[0]!r}"
        )
    return items
