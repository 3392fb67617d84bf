"""Benchmark loaders (`cacovid.data.benchmarks`): each benchmark's own annotation layout, written
here as a few rows with tiny generated videos; prompts, answers, categories, the `--data NAME:ROOT`
form, clear errors for bad annotations, per-category summaries and an evaluation end to end."""

from __future__ import annotations

import inspect
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from cacovid.data.benchmarks import BENCHMARKS, AnnotationError, BenchmarkItem, load_benchmark
from cacovid.data.benchmarks.common import letter_list
from cacovid.data.sources import find_item, source_from_args
from cacovid.data.video import write_video
from cacovid.evaluate.report import category_table, shown_category_axes
from cacovid.evaluate.scoring import score_answer
from cacovid.evaluate.summary import summarize
from cacovid.scoring import accuracy_reward


def _video(path: Path, seed: int = 0) -> Path:
    frames = np.random.default_rng(seed).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, fps=4)


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


# ---- fixtures in each benchmark's layout ---------------------------------------------------------
def _videomme_rows() -> list[dict]:
    def row(qid, vid, duration, task, answer, domain="Knowledge"):
        return {
            "video_id": qid.split("-")[0],
            "duration": duration,
            "domain": domain,
            "sub_category": "Astronomy",
            "url": f"https://www.youtube.com/watch?v={vid}",
            "videoID": vid,
            "question_id": qid,
            "task_type": task,
            "question": f"What is shown in {vid}?",
            "options": ["A. A star.", "B. A planet.", "C. A comet.", "D. A moon."],
            "answer": answer,
        }

    return [
        row("001-1", "vidShortA", "short", "Counting Problem", "B"),
        row("001-2", "vidShortA", "short", "Object Recognition", "A"),
        row("301-1", "vidLongB", "long", "Counting Problem", "D", domain="Sports Competition"),
    ]


@pytest.fixture
def videomme_root(tmp_path) -> Path:
    root = tmp_path / "Video-MME"
    _json(root / "videomme.json", _videomme_rows())
    _video(root / "data" / "vidShortA.mp4")
    _video(root / "data" / "vidLongB.MP4", seed=1)  # the hub's videos come with either suffix
    return root


@pytest.fixture
def mlvu_dev_root(tmp_path) -> Path:
    root = tmp_path / "MLVU_dev" / "MLVU"  # the hub keeps an MLVU/ level; the loader accepts both
    _json(
        root / "json" / "1_plotQA.json",
        [
            {
                "video": "movie_1.mp4",
                "duration": 246,
                "question": "What does the detective find?",
                "candidates": ["a letter", "a key", "a knife", "a map"],
                "answer": "a key",
                "question_type": "plotQA",
            }
        ],
    )
    _json(
        root / "json" / "4_count.json",
        [
            {
                "video": "count_1.mp4",
                "duration": 300,
                "question": "How many times does the man jump?",
                "candidates": ["1", "2", "3", "4"],
                "answer": "3",
                "question_type": "count",
            }
        ],
    )
    _json(root / "json" / "8_sub_scene.json", [{"video": "x.mp4", "question": "Describe.", "answer": "…"}])
    _video(root / "video" / "1_plotQA" / "movie_1.mp4")
    _video(root / "video" / "4_count" / "count_1.mp4")
    return root.parent


@pytest.fixture
def mlvu_test_root(tmp_path) -> Path:
    root = tmp_path / "MLVU_Test"
    _json(
        root / "test-ground-truth" / "test_mcq_gt.json",
        [
            {
                "video": "test_sports_1.mp4",
                "duration": 600,
                "question": "Which team scores first?",
                "candidates": ["red", "blue", "green", "white", "black", "yellow"],
                "answer": "yellow",
                "question_type": "sportsQA",
                "question_id": "SQA_0",
            }
        ],
    )
    _video(root / "video" / "test_sports_1.mp4")
    return root


@pytest.fixture
def lvb_root(tmp_path) -> Path:
    root = tmp_path / "LongVideoBench"
    rows = [
        {
            "video_id": "v1",
            "question": "What colour is the car at the start?",
            "question_wo_referring_query": "What colour is the car?",
            "candidates": ["red", "blue", "white"],
            "correct_choice": 2,
            "position": [1],
            "topic_category": "NP-News-Programs",
            "question_category": "S2E",
            "level": "L1-Perception",
            "id": "v1_0",
            "video_path": "v1.mp4",
            "subtitle_path": "v1_en.json",
            "duration_group": 600,
            "starting_timestamp_for_subtitles": 0,
            "duration": 412.5,
        },
        {
            "video_id": "v2",
            "question": "Who enters first?",
            "candidates": ["a man", "a woman", "a dog", "a child", "nobody"],
            "correct_choice": 0,
            "question_category": None,  # an optional field may be null
            "id": "v2_0",
            "video_path": "v2.mp4",
            "duration_group": 15,
            "duration": 12.0,
        },
    ]
    _json(root / "lvb_val.json", rows)
    _video(root / "videos" / "v1.mp4")
    _video(root / "videos" / "v2.mp4", seed=2)
    return root


@pytest.fixture
def mvbench_root(tmp_path) -> Path:
    root = tmp_path / "MVBench"
    _json(
        root / "json" / "action_sequence.json",
        [
            {
                "video": "ABC12.mp4",
                "question": "What did the person do after holding the cup?",
                "candidates": ["Put down the cup.", "Opened the door.", "Sat on the bed.", "Ate food."],
                "answer": "Opened the door.",
                "start": 1.5,
                "end": 9.0,
            }
        ],
    )
    _json(
        root / "json" / "object_shuffle.json",
        [
            {
                "video": "shuffle_1.mp4",
                "question": "Where is the ball at the end?",
                "candidates": ["under the first cup", "under the second cup", "under the third cup"],
                "answer": "under the first cup",
            }
        ],
    )
    _video(root / "video" / "star" / "Charades_v1_480" / "ABC12.mp4")
    _video(root / "video" / "perception" / "videos" / "shuffle_1.mp4")
    return root


@pytest.fixture
def egoschema_root(tmp_path) -> Path:
    root = tmp_path / "EgoSchema"

    def q(uid):
        row = {"q_uid": uid, "google_drive_id": "x", "question": f"What is C doing overall in {uid}?"}
        row.update({f"option {k}": f"activity {k}" for k in range(5)})
        return row

    _json(root / "questions.json", [q("uid-a"), q("uid-b"), q("uid-c")])
    _json(root / "subset_answers.json", {"uid-c": 4, "uid-a": 1})
    _video(root / "videos" / "uid-a.mp4")
    _video(root / "videos" / "uid-c.mp4")
    return root


# ---- loading and prompts -------------------------------------------------------------------------
def test_videomme_items_prompt_and_categories(videomme_root):
    items = load_benchmark("videomme", videomme_root)
    assert [it.id for it in items] == ["001-1", "001-2", "301-1"]
    first = items[0]
    assert isinstance(first, BenchmarkItem)
    assert first.options == ["A star.", "A planet.", "A comet.", "A moon."] and first.solution == "B"
    assert first.family == "short"
    assert first.meta["categories"] == {
        "duration": "short",
        "domain": "Knowledge",
        "task_type": "Counting Problem",
    }
    assert first.video_path == str(videomme_root / "data" / "vidShortA.mp4")
    assert items[2].video_path.endswith("vidLongB.MP4")
    assert first.prompt_text() == (
        "Select the best answer to the following multiple-choice question based on the video. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "What is shown in vidShortA?\n"
        "A. A star.\nB. A planet.\nC. A comet.\nD. A moon.\n"
        "The best answer is:"
    )
    assert [it.id for it in load_benchmark("videomme-long", videomme_root)] == ["301-1"]
    assert len(load_benchmark("videomme-short", videomme_root)) == 2
    with pytest.raises(AnnotationError, match="no medium questions"):
        load_benchmark("videomme-medium", videomme_root)
    assert letter_list(2) == "A or B" and letter_list(5) == "A, B, C, D, or E"


def test_videomme_reads_pandas_column_json(tmp_path):
    rows = _videomme_rows()
    columns = {k: {str(i): r[k] for i, r in enumerate(rows)} for k in rows[0]}  # DataFrame.to_json()
    _json(tmp_path / "videomme" / "test-00000-of-00001.json", columns)
    items = load_benchmark("videomme", tmp_path)
    assert [it.id for it in items] == ["001-1", "001-2", "301-1"]
    assert items[0].video_path == str(tmp_path / "data" / "vidShortA.mp4")  # data/ beside videomme/


def test_videomme_parquet(tmp_path, monkeypatch):
    path = tmp_path / "videomme" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        monkeypatch.setitem(sys.modules, "pandas", None)  # neither reader: a clear error
        with pytest.raises(AnnotationError, match=r"needs pyarrow or pandas.*videomme\.json"):
            load_benchmark("videomme", tmp_path)
        return
    pq.write_table(pa.Table.from_pylist(_videomme_rows()), path)
    assert [it.solution for it in load_benchmark("videomme", tmp_path)] == ["B", "A", "D"]


def test_mlvu_dev_and_test(mlvu_dev_root, mlvu_test_root):
    items = load_benchmark("mlvu-dev", mlvu_dev_root)
    assert [it.id for it in items] == ["1_plotQA:0", "4_count:0"]  # the generation task is skipped
    plot, count = items
    assert plot.solution == "B" and count.solution == "C" and count.options == ["1", "2", "3", "4"]
    assert plot.family == "plotQA" and plot.meta["categories"] == {"task": "plotQA"}
    assert plot.video_path == str(mlvu_dev_root / "MLVU" / "video" / "1_plotQA" / "movie_1.mp4")
    assert plot.prompt_text() == (
        "Carefully watch this video and pay attention to every detail. Based on your observations, "
        "select the best option that accurately addresses the question.\n"
        "Question: What does the detective find?\nOptions:\n"
        "(A) a letter\n(B) a key\n(C) a knife\n(D) a map\n"
        "Only give the best option."
    )
    [test] = load_benchmark("mlvu-test", mlvu_test_root)
    assert test.id == "SQA_0" and test.solution == "F" and len(test.options) == 6
    assert test.meta["categories"] == {"task": "sportsQA"}
    assert "(F) yellow" in test.prompt_text()


def test_longvideobench(lvb_root):
    items = load_benchmark("longvideobench", lvb_root)
    assert [it.id for it in items] == ["v1_0", "v2_0"]
    assert items[0].solution == "C" and items[1].solution == "A" and len(items[1].options) == 5
    assert items[0].family == "180-600s" and items[1].family == "8-15s"
    assert items[0].meta["categories"] == {"duration_group": "180-600s", "question_category": "S2E"}
    assert items[1].meta["categories"] == {"duration_group": "8-15s"}
    assert items[0].video_path == str(lvb_root / "videos" / "v1.mp4")
    assert items[0].prompt_text() == (
        "What colour is the car at the start?\nA. red\nB. blue\nC. white\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_mvbench(mvbench_root):
    items = load_benchmark("mvbench", mvbench_root)
    assert [it.id for it in items] == ["action_sequence:0", "object_shuffle:0"]  # MVBench's task order
    seq, shuffle = items
    assert seq.solution == "B" and shuffle.solution == "A" and len(shuffle.options) == 3
    assert seq.family == "Action Sequence" and shuffle.meta["categories"] == {"task": "Object Shuffle"}
    assert seq.meta["clip"] == [1.5, 9.0] and "clip" not in shuffle.meta
    assert seq.video_path == str(mvbench_root / "video" / "star" / "Charades_v1_480" / "ABC12.mp4")
    assert seq.prompt_text() == (
        "Carefully watch the video and pay attention to the cause and sequence of events, the detail "
        "and movement of objects, and the action and pose of persons. Based on your observations, "
        "select the best option that accurately addresses the question.\n"
        "Question: What did the person do after holding the cup?\nOptions:\n"
        "(A) Put down the cup.\n(B) Opened the door.\n(C) Sat on the bed.\n(D) Ate food.\n"
        "Only give the best option."
    )


def test_egoschema_subset(egoschema_root):
    items = load_benchmark("egoschema", egoschema_root)
    assert [it.id for it in items] == ["uid-a", "uid-c"]  # the subset, in questions.json order
    assert items[0].solution == "B" and items[1].solution == "E"
    assert items[0].family is None and items[0].meta["categories"] == {}
    assert items[0].options == [f"activity {k}" for k in range(5)]
    assert (
        items[0]
        .prompt_text()
        .endswith("E. activity 4\nAnswer with the option's letter from the given choices directly.")
    )


def test_answers_score_by_letter(mvbench_root, videomme_root):
    seq = load_benchmark("mvbench", mvbench_root)[0]  # correct: (B) Opened the door.
    for text, want in [("B", 1.0), ("(B) Opened the door.", 1.0), ("Best option: (B", 1.0), ("A", 0.0)]:
        assert score_answer(text, seq).score == want, text
        assert accuracy_reward(text, seq) == want  # training rewards score the same way
    shuffle = load_benchmark("mvbench", mvbench_root)[1]  # correct: (A) under the first cup
    assert score_answer("It is under the first cup", shuffle).score == 1.0  # the option's text names it
    unread = score_answer("I cannot tell", seq)
    assert unread.score == 0.0 and unread.error is not None
    vm = load_benchmark("videomme", videomme_root)[0]  # correct: B
    assert score_answer("The best answer is B.", vm).score == 1.0


# ---- the command line's --data NAME:ROOT ---------------------------------------------------------
def test_source_from_args_names_benchmarks(videomme_root, mvbench_root, tmp_path):
    source = source_from_args(f"videomme:{videomme_root}", n=2, start=1)
    assert source.dataset == f"videomme:{videomme_root.resolve()}" and source.world is None
    assert [it.id for it in source.items()] == ["001-2", "301-1"]
    assert source_from_args(f"mvbench:{mvbench_root}").n == 2
    run = {"dataset": source.dataset}
    assert find_item(run, "301-1").solution == "D" and find_item(run, "nope") is None
    assert find_item({"dataset": f"mvbench:{tmp_path / 'gone'}"}, "x") is None
    with pytest.raises(ValueError, match="name the MLVU split: mlvu-dev:ROOT or mlvu-test:ROOT"):
        source_from_args(f"mlvu:{tmp_path}")
    with pytest.raises(ValueError, match="unknown benchmark 'videome'"):
        source_from_args(f"videome:{videomme_root}")
    with pytest.raises(ValueError, match="only applies to --data synthetic"):
        source_from_args(f"videomme:{videomme_root}", world="frames=4")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        source_from_args(f"egoschema:{tmp_path / 'nowhere'}")
    assert set(BENCHMARKS) >= {"videomme", "mlvu-dev", "mlvu-test", "longvideobench", "mvbench", "egoschema"}


def test_repeated_ids_are_refused_for_evaluation_only(egoschema_root):
    rows = json.loads((egoschema_root / "questions.json").read_text())
    _json(egoschema_root / "questions.json", [*rows, rows[0]])
    with pytest.raises(AnnotationError, match=r"questions\.json, row 3: q_uid 'uid-a' appears twice"):
        load_benchmark("egoschema", egoschema_root)


# ---- bad annotations: a clear error naming the file and row --------------------------------------
def _edit(path: Path, index: int, **changes) -> None:
    rows = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            rows[index].pop(key)
        else:
            rows[index][key] = value
    _json(path, rows)


def test_videomme_bad_rows(videomme_root, mvbench_root):
    ann = videomme_root / "videomme.json"
    _edit(ann, 1, answer="E")
    with pytest.raises(
        AnnotationError, match=r"videomme\.json, row 1: field 'answer' = 'E' is not an option"
    ):
        load_benchmark("videomme", videomme_root)
    _edit(ann, 1, answer="A", task_type=None)
    with pytest.raises(AnnotationError, match=r"videomme\.json, row 1: missing field 'task_type'"):
        load_benchmark("videomme", videomme_root)
    _edit(ann, 1, task_type="Counting Problem", duration="huge")
    with pytest.raises(AnnotationError, match=r"row 1: field 'duration' must be one of"):
        load_benchmark("videomme", videomme_root)
    _edit(ann, 1, duration="short", options="A. one B. two")
    with pytest.raises(AnnotationError, match=r"row 1: field 'options' must be list"):
        load_benchmark("videomme", videomme_root)
    # an MVBench task file handed to the Video-MME loader
    shutil.copy(mvbench_root / "json" / "object_shuffle.json", ann)
    with pytest.raises(
        AnnotationError, match=r"videomme\.json, row 0: missing field 'videoID' \(is this a Video-MME"
    ):
        load_benchmark("videomme", videomme_root)
    ann.write_text("{not json")
    with pytest.raises(AnnotationError, match=r"videomme\.json is not valid JSON"):
        load_benchmark("videomme", videomme_root)
    ann.unlink()
    with pytest.raises(AnnotationError, match="no annotation under"):
        load_benchmark("videomme", videomme_root)


def test_mlvu_bad_rows(mlvu_dev_root, mlvu_test_root, mvbench_root):
    plot = mlvu_dev_root / "MLVU" / "json" / "1_plotQA.json"
    _edit(plot, 0, answer="a spoon")
    with pytest.raises(
        AnnotationError, match=r"1_plotQA\.json, row 0: field 'answer' = 'a spoon' matches no option"
    ):
        load_benchmark("mlvu-dev", mlvu_dev_root)
    _edit(plot, 0, answer="a key", candidates=["only one"])
    with pytest.raises(AnnotationError, match=r"row 0: field 'candidates' must hold 2 to 8 options, got 1"):
        load_benchmark("mlvu-dev", mlvu_dev_root)
    shutil.copy(mvbench_root / "json" / "object_shuffle.json", plot)  # no question_type: not MLVU
    with pytest.raises(AnnotationError, match=r"1_plotQA\.json, row 0: missing field 'question_type'"):
        load_benchmark("mlvu-dev", mlvu_dev_root)
    _json(mlvu_dev_root / "MLVU" / "json" / "object_shuffle.json", [])
    with pytest.raises(AnnotationError, match=r"object_shuffle\.json is not an MLVU dev task file"):
        load_benchmark("mlvu-dev", mlvu_dev_root)
    with pytest.raises(AnnotationError, match="no json/ folder"):
        load_benchmark("mlvu-dev", mlvu_test_root)  # the test split's files under the dev name
    gt = mlvu_test_root / "test-ground-truth" / "test_mcq_gt.json"
    _edit(gt, 0, answer="G")
    with pytest.raises(AnnotationError, match=r"test_mcq_gt\.json, row 0: field 'answer' = 'G'"):
        load_benchmark("mlvu-test", mlvu_test_root)


def test_lvb_mvbench_egoschema_bad_rows(lvb_root, mvbench_root, egoschema_root):
    ann = lvb_root / "lvb_val.json"
    _edit(ann, 1, correct_choice=5)
    with pytest.raises(
        AnnotationError, match=r"lvb_val\.json, row 1: field 'correct_choice' = 5 is outside the 5"
    ):
        load_benchmark("longvideobench", lvb_root)
    _edit(ann, 1, correct_choice=0, duration_group="long")
    with pytest.raises(AnnotationError, match=r"row 1: field 'duration_group' must be a number"):
        load_benchmark("longvideobench", lvb_root)
    seq = mvbench_root / "json" / "action_sequence.json"
    _edit(seq, 0, end=1.0)
    with pytest.raises(AnnotationError, match=r"action_sequence\.json, row 0: fields 'start'/'end'"):
        load_benchmark("mvbench", mvbench_root)
    _edit(seq, 0, end=9.0, answer="Flew away.")
    with pytest.raises(
        AnnotationError, match=r"action_sequence\.json, row 0: field 'answer' = 'Flew away.' matches no"
    ):
        load_benchmark("mvbench", mvbench_root)
    _json(mvbench_root / "json" / "lvb_val.json", [])
    with pytest.raises(AnnotationError, match=r"lvb_val\.json is not an MVBench task file"):
        load_benchmark("mvbench", mvbench_root)
    _json(egoschema_root / "subset_answers.json", {"uid-a": 5})
    with pytest.raises(
        AnnotationError,
        match=r"subset_answers\.json, q_uid 'uid-a': the answer must be an option number 0 to 4, got 5",
    ):
        load_benchmark("egoschema", egoschema_root)
    _json(egoschema_root / "subset_answers.json", {"uid-zzz": 1})
    with pytest.raises(AnnotationError, match=r"names 1 q_uid\(s\) that .*questions\.json lacks"):
        load_benchmark("egoschema", egoschema_root)
    _json(egoschema_root / "subset_answers.json", {"uid-a": 1})
    _edit(egoschema_root / "questions.json", 0, **{"option 3": None})
    with pytest.raises(AnnotationError, match=r"questions\.json, row 0: missing field 'option 3'"):
        load_benchmark("egoschema", egoschema_root)


# ---- per-category summaries ----------------------------------------------------------------------
def _row(item, method, ratio, score, cats=None, family=None):
    row = {"item_id": item, "method": method, "ratio": ratio, "score": float(score), "correct": int(score)}
    row.update(family=family, grid=[4, 7, 7], error=None, error_kind=None)
    if cats is not None:
        row["categories"] = cats
    return row


def test_summary_breaks_accuracy_down_by_category():
    a = {"duration": "short", "task_type": "Counting Problem"}
    b = {"duration": "short", "task_type": "OCR Problems"}
    c = {"duration": "long", "task_type": "Counting Problem"}
    rows = [
        _row("1", "full", 1.0, 1, a, "short"),
        _row("2", "full", 1.0, 0, b, "short"),
        _row("3", "full", 1.0, 1, c, "long"),
        _row("1", "uniform", 0.1, 0, a, "short"),
        _row("2", "uniform", 0.1, 1, b, "short"),
        _row("3", "uniform", 0.1, 1, c, "long"),
    ]
    summary = summarize(rows)
    assert summary["categories"] == {
        "duration": ["short", "long"],
        "task_type": ["Counting Problem", "OCR Problems"],
    }
    assert summary["category_counts"] == {
        "duration": {"short": 2, "long": 1},
        "task_type": {"Counting Problem": 2, "OCR Problems": 1},
    }
    full, uniform = summary["rows"]
    assert full["per_category"] == {
        "duration": {"short": 0.5, "long": 1.0},
        "task_type": {"Counting Problem": 1.0, "OCR Problems": 0.0},
    }
    assert uniform["per_category"]["task_type"] == {"Counting Problem": 0.5, "OCR Problems": 1.0}
    # the duration axis repeats the family columns of the main table: only task_type gets a table
    assert shown_category_axes(summary) == ["task_type"]
    table = category_table(summary, "task_type")
    assert "| Method | Retention | Counting Problem (2) | OCR Problems (1) | Avg. |" in table
    assert "| uniform | 10% | 50.0 | 100.0 | 66.7 |" in table


def test_printed_category_tables():
    from rich.console import Console
    from rich.table import Table

    from cacovid.cli.eval import MAX_PRINTED_VALUES, _category_tables

    tasks = [f"task {k}" for k in range(MAX_PRINTED_VALUES + 1)]
    rows = []
    for k, task in enumerate(tasks):
        cats = {"task": task, "size": "big" if k % 2 else "small"}
        rows += [_row(str(k), "full", 1.0, 1, cats), _row(str(k), "uniform", 0.25, k % 2, cats)]
    printed = _category_tables(summarize(rows))
    assert printed[0] == f"accuracy per task: {len(tasks)} values, see report.md and summary.json"
    assert isinstance(printed[1], Table) and printed[1].title == "accuracy % per size"
    console = Console(width=100, record=True)
    console.print(printed[1])
    text = console.export_text()
    assert "small (7)" in text and "big (6)" in text
    assert "uniform" in text and "100.0" in text and "0.0" in text


def test_summary_of_rows_without_categories_stays_readable():
    rows = [_row("1", "full", 1.0, 1, family="color"), _row("1", "uniform", 0.5, 0, family="color")]
    summary = summarize(rows)
    assert summary["categories"] == {} and summary["category_counts"] == {}
    assert all(r["per_category"] == {} for r in summary["rows"])
    assert shown_category_axes(summary) == []
    old = {"rows": [{"method": "full", "ratio": 1.0, "accuracy": 1.0, "per_family": {}}]}  # an old file
    assert shown_category_axes(old) == []


# ---- end to end on a tiny model ------------------------------------------------------------------
def _harness_writes_categories() -> bool:
    from cacovid.evaluate.harness import Harness

    return "categories" in inspect.getsource(Harness._base_row)


def test_eval_over_a_benchmark_records_a_missing_video_per_item(llava_llm, videomme_root, tmp_path):
    from cacovid.evaluate import EvalConfig, build_methods, parse_methods, run_evaluation
    from cacovid.evaluate.records import read_rows

    (videomme_root / "data" / "vidLongB.MP4").unlink()  # item 301-1 has no video now
    source = source_from_args(f"videomme:{videomme_root}")
    methods = build_methods(parse_methods("uniform"), llava_llm)
    summary = run_evaluation(llava_llm, source, methods, tmp_path / "out", EvalConfig(ratios=(0.5,)))
    rows = read_rows(tmp_path / "out")
    missing = [r for r in rows if r["item_id"] == "301-1"]
    present = [r for r in rows if r["item_id"] != "301-1"]
    assert {r["method"] for r in missing} == {"full", "blind", "uniform"}  # no evidence: no oracle
    assert all(r["error_kind"] == "encode" and "vidLongB.mp4" in r["error"] for r in missing)
    assert all("not found" in r["error"] for r in missing)
    assert present and all(r["error_kind"] in (None, "unparsable") for r in present)
    assert all(r["prediction"] is not None for r in present)
    assert summary["n_items"] == 3 and summary["n_errors"] == len(missing)
    assert summary["dataset"] == f"videomme:{videomme_root.resolve()}"
    assert summary["families"] == ["short", "long"]
    for row in summary["rows"]:
        assert row["per_family"]["long"] == 0.0  # the failed item counts as wrong
        assert row["n"] == 3


def test_cli_eval_on_a_benchmark(llava_llm, mvbench_root, tmp_path):
    from typer.testing import CliRunner

    from cacovid.cli.eval import app

    model_dir = tmp_path / "model"
    llava_llm.model.save_pretrained(model_dir)
    llava_llm.processor.save_pretrained(model_dir)
    out = tmp_path / "res"
    args = ["eval", "--model", str(model_dir), "--data", f"mvbench:{mvbench_root}", "--methods", "uniform"]
    args += ["--ratios", "0.5", "--out", str(out), "--no-efficiency", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == f"mvbench:{mvbench_root.resolve()}" and summary["n_items"] == 2
    assert summary["families"] == ["Action Sequence", "Object Shuffle"]  # the task, per item
    assert all(set(r["per_family"]) == {"Action Sequence", "Object Shuffle"} for r in summary["rows"])
    report = (out / "report.md").read_text()
    assert "| Method | Retention | Action Sequence | Object Shuffle |" in report
    bad = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "--data", f"mlvu:{mvbench_root}"])
    assert bad.exit_code != 0 and "mlvu-dev" in bad.output


@pytest.mark.skipif(
    not _harness_writes_categories(), reason="the harness does not write item categories into rows"
)
def test_eval_breaks_a_benchmark_down_by_category(llava_llm, videomme_root, tmp_path):
    from cacovid.evaluate import EvalConfig, build_methods, parse_methods, run_evaluation
    from cacovid.evaluate.records import read_rows
    from cacovid.evaluate.report import build_report

    source = source_from_args(f"videomme:{videomme_root}")
    methods = build_methods(parse_methods("uniform"), llava_llm)
    summary = run_evaluation(llava_llm, source, methods, tmp_path, EvalConfig(ratios=(0.5,)))
    rows = read_rows(tmp_path)
    assert all(
        r["categories"] == source.sequence[0].meta["categories"] for r in rows if r["item_id"] == "001-1"
    )
    assert summary["categories"]["task_type"] == ["Counting Problem", "Object Recognition"]
    assert summary["category_counts"]["domain"] == {"Knowledge": 2, "Sports Competition": 1}
    for row in summary["rows"]:
        assert set(row["per_category"]) == {"duration", "domain", "task_type"}
    report = build_report(tmp_path, n_heatmap_items=0).markdown.read_text()
    assert "## Accuracy by category" in report and "### task type" in report and "### duration" not in report
