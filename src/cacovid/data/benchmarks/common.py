"""What every benchmark loader shares: the item type, row checks that name the file and row, answers.

Why one module: five annotation layouts differ in field names but fail in the same ways (a missing
field, an option list of the wrong kind, an answer that names no option, a file of another
benchmark). Each of those gets one check here, with a message naming the annotation file and the
row, so a user sees which line of which file to look at.

`BenchmarkItem` is a `QAItem` whose prompt is the benchmark's own (its instruction, its option
layout), so the model reads the question as the benchmark's published evaluation writes it, while
scoring, training and evaluation treat it as any other multiple-choice item (bare `options`, a
`solution` letter).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cacovid.types import QAItem

__all__ = [
    "LETTERS",
    "AnnotationError",
    "BenchmarkItem",
    "Row",
    "bracketed_options_prompt",
    "categories_meta",
    "letter_list",
    "make_item",
    "read_json",
]

# The scorer (cacovid.scoring) and QAItem read at most eight options, A to H.
LETTERS = "ABCDEFGH"


class AnnotationError(ValueError):
    """A malformed annotation: the message names the file (and the row where there is one)."""


@dataclass
class BenchmarkItem(QAItem):
    """A multiple-choice item that carries its benchmark's own prompt text.

    `prompt` is the whole text the model reads after the video (instruction, question, lettered
    options, answer instruction); `problem` keeps the bare question and `options` the bare option
    texts, as every other item.
    """

    prompt: str = ""

    def prompt_text(self) -> str:
        """The benchmark's own prompt (see the loader of each benchmark for its source)."""
        return self.prompt or super().prompt_text()


def bracketed_options_prompt(instruction: str, question: str, options: Sequence[str]) -> str:
    """The prompt MLVU and MVBench share: their instruction, the question, "(A) text" per option and
    "Only give the best option."; only the instruction differs between them."""
    lines = [instruction, f"Question: {question}", "Options:"]
    lines += [f"({LETTERS[i]}) {o}" for i, o in enumerate(options)]
    lines.append("Only give the best option.")
    return "\n".join(lines)


def letter_list(n: int) -> str:
    """'A, B, C, or D' for four options (the wording of Video-MME's instruction)."""
    letters = list(LETTERS[:n])
    if len(letters) <= 2:
        return " or ".join(letters)
    return ", ".join(letters[:-1]) + ", or " + letters[-1]


def read_json(path: Path, benchmark: str) -> Any:
    """The parsed JSON of an annotation file; a clear error for a missing or invalid file."""
    if not path.is_file():
        raise AnnotationError(f"{benchmark}: annotation file {path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{benchmark}: {path} is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{benchmark}: {path} is not UTF-8 text: {exc}") from exc


class Row:
    """One annotation row with checked field access; every error names the file and the row."""

    def __init__(self, data: Any, path: Path, index: int, benchmark: str) -> None:
        self.path, self.index, self.benchmark = path, index, benchmark
        if not isinstance(data, Mapping):
            raise self.error(f"expected a JSON object, got {type(data).__name__}")
        self.data = data

    def error(self, message: str) -> AnnotationError:
        return AnnotationError(f"{self.benchmark}: {self.path}, row {self.index}: {message}")

    def get(self, name: str, kind: type | tuple[type, ...], *, default: Any = ...) -> Any:
        """Field `name`, which must be of `kind`; missing fields hint at a file of another benchmark.

        With a `default` the field is optional: missing or null, it reads as the default.
        """
        if name not in self.data or (default is not ... and self.data[name] is None):
            if default is not ...:
                return default
            raise self.error(
                f"missing field {name!r} (is this a {self.benchmark} annotation file? "
                f"its fields are {sorted(self.data)[:8]})"
            )
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            expected = " or ".join(k.__name__ for k in kinds)
            raise self.error(f"field {name!r} must be {expected}, got {value!r}")
        return value

    def text(self, name: str) -> str:
        """A non-empty string field."""
        value = self.get(name, str)
        if not value.strip():
            raise self.error(f"field {name!r} is empty")
        return value

    def options(self, name: str) -> list[str]:
        """A list of 2 to 8 option texts (numbers in an option list are read as their text)."""
        value = self.get(name, (list, tuple))
        if not all(isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in value):
            raise self.error(f"field {name!r} must be a list of option texts, got {value!r}")
        return self.check_options([str(o) for o in value], name)

    def check_options(self, options: Sequence[str], name: str) -> list[str]:
        options = list(options)
        if not 2 <= len(options) <= len(LETTERS):
            raise self.error(f"field {name!r} must hold 2 to {len(LETTERS)} options, got {len(options)}")
        return options

    def answer_from_text(self, answer: str, options: Sequence[str], name: str = "answer") -> str:
        """The letter of the option whose text is `answer` (MVBench and MLVU store the text)."""
        matches = [i for i, o in enumerate(options) if o == answer]
        if not matches:
            stripped = [i for i, o in enumerate(options) if o.strip() == answer.strip()]
            matches = stripped
        if len(matches) != 1:
            why = "matches no option" if not matches else "matches several options"
            raise self.error(f"field {name!r} = {answer!r} {why} of {list(options)}")
        return LETTERS[matches[0]]

    def answer_from_index(self, index: Any, n_options: int, name: str) -> str:
        """The letter of option number `index` (0-based; LongVideoBench, EgoSchema)."""
        if isinstance(index, str) and index.strip().lstrip("-").isdigit():
            index = int(index.strip())
        if isinstance(index, bool) or not isinstance(index, int):
            raise self.error(f"field {name!r} must be an option number, got {index!r}")
        if not 0 <= index < n_options:
            raise self.error(
                f"field {name!r} = {index} is outside the {n_options} options (0 to {n_options - 1})"
            )
        return LETTERS[index]

    def answer_letter(self, letter: Any, n_options: int, name: str = "answer") -> str:
        """A letter answer ('B'), checked to name one of the options (Video-MME)."""
        if not isinstance(letter, str) or len(letter.strip()) != 1:
            raise self.error(f"field {name!r} must be one option letter, got {letter!r}")
        letter = letter.strip().upper()
        valid = LETTERS[:n_options]
        if letter not in valid:
            raise self.error(
                f"field {name!r} = {letter!r} is not an option letter (the row has {n_options} "
                f"options, {valid[0]} to {valid[-1]})"
            )
        return letter


def categories_meta(categories: Mapping[str, str | None]) -> dict[str, str]:
    """Category axis → value, without empty values (an item may lack one)."""
    return {str(k): str(v) for k, v in categories.items() if v is not None and str(v) != ""}


def make_item(
    *,
    item_id: str,
    question: str,
    options: Sequence[str],
    solution: str,
    prompt: str,
    video_path: Path,
    benchmark: str,
    categories: Mapping[str, str | None],
    source: Path,
    row: int,
    **extra: Any,
) -> BenchmarkItem:
    """A BenchmarkItem with the shared metadata: benchmark, categories, annotation file and row.

    `family` is the first category axis's value (the breakdown reports show as columns); every
    axis is in `meta["categories"]`.
    """
    cats = categories_meta(categories)
    meta: dict[str, Any] = {
        "benchmark": benchmark,
        "categories": cats,
        "annotation": str(source),
        "row": row,
    }
    meta.update({k: v for k, v in extra.items() if v is not None})
    first = next(iter(categories), None)
    return BenchmarkItem(
        id=item_id,
        problem=question,
        options=list(options),
        solution=solution,
        problem_type="multiple choice",
        family=cats.get(first) if first is not None else None,
        video_path=str(video_path),
        meta=meta,
        answer_format="letter",
        prompt=prompt,
    )
