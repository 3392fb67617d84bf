"""A local lmms-eval task over a Video-R1 JSON file, for the plugin's tests.

The task asks each question with cacovid's own prompt (`QAItem.prompt_text`) and scores the answer
with cacovid's own scorer (`cacovid.evaluate.scoring.score_answer`), so its accuracy is comparable
with `cacovid eval` on the same file: what remains to differ is only the path each takes through
its harness. Documents carry the item's `id`, which the plugin seeds random choices from.
"""

from __future__ import annotations

import json
from pathlib import Path

from cacovid.data.videor1 import load_videor1

TASK = "cacovid_videor1"

_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: solution
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
"""

_UTILS = """from cacovid.evaluate.scoring import score_answer
from cacovid.types import QAItem


def _item(doc):
    return QAItem(
        id=doc["id"],
        problem=doc["problem"],
        options=doc["options"],
        solution=doc["solution"],
        problem_type=doc["problem_type"],
        answer_format=doc["answer_format"],
        video_path=doc["video"],
    )


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return _item(doc).prompt_text()


def process_results(doc, results):
    return {"accuracy": score_answer(results[0], _item(doc)).correct}
"""


def write_task(videor1_json: Path, folder: Path, *, max_new_tokens: int = 8) -> Path:
    """Write `folder/{TASK}.yaml`, `utils.py` and the documents (JSONL) for `videor1_json`'s items."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = folder / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as fh:
        for item in load_videor1(videor1_json):
            doc = {
                "id": item.id,
                "video": item.video_path,
                "problem": item.problem,
                "options": item.options,
                "solution": item.solution,
                "problem_type": item.problem_type,
                "answer_format": item.answer_format,
            }
            fh.write(json.dumps(doc) + "\n")
    (folder / f"{TASK}.yaml").write_text(_YAML.format(task=TASK, docs=docs, max_new_tokens=max_new_tokens))
    (folder / "utils.py").write_text(_UTILS)
    return folder
