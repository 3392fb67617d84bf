"""Video-R1 JSON: round trip, both option/solution spellings, and errors that name item and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cacovid.data.videor1 import load_videor1, save_videor1, strip_answer_tags, strip_option_letter
from cacovid.types import QAItem


def _items(tmp_path) -> list[QAItem]:
    videos = tmp_path / "media"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"")
    (videos / "b.mp4").write_bytes(b"")
    evidence = np.zeros((4, 3, 3), dtype=bool)
    evidence[1, 0, 2] = evidence[2, 1, 1] = True
    return [
        QAItem(
            id="synthetic:test:0",
            problem="what color is the triangle ?",
            options=["red", "blue", "green", "cyan"],
            solution="B",
            family="color",
            video_path=str(videos / "a.mp4"),
            evidence=evidence,
        ),
        QAItem(
            id="real/7",
            problem="How many cars are there?",
            options=[],
            solution="3",
            problem_type="numerical",
            video_path=str(videos / "b.mp4"),
        ),
    ]


def test_round_trip(tmp_path):
    items = _items(tmp_path)
    path = save_videor1(items, tmp_path / "out" / "data.json")
    back = load_videor1(path)
    assert len(back) == 2
    for a, b in zip(items, back, strict=True):
        assert (b.id, b.problem, b.options, b.solution, b.problem_type, b.family) == (
            a.id,
            a.problem,
            a.options,
            a.solution,
            a.problem_type,
            a.family,
        )
        assert b.video_path is not None
        assert b.video_path.endswith(a.video_path.split("/")[-1])
        assert (tmp_path / "media").samefile(Path(b.video_path).parent)
    np.testing.assert_array_equal(back[0].evidence, items[0].evidence)
    assert back[0].evidence.dtype == np.bool_
    assert back[1].evidence is None


def test_saved_file_uses_video_r1_spelling_and_relative_paths(tmp_path):
    path = save_videor1(_items(tmp_path), tmp_path / "out" / "data.json")
    raw = json.loads(path.read_text())
    assert raw[0]["options"] == ["A. red", "B. blue", "C. green", "D. cyan"]
    assert raw[0]["solution"] == "<answer>B</answer>"
    assert raw[0]["path"] == "../media/a.mp4"
    assert raw[0]["evidence_path"].startswith("evidence/") and raw[0]["evidence_path"].endswith(".npy")
    assert "evidence_path" not in raw[1]
    assert raw[1]["problem_type"] == "numerical"


def test_load_accepts_bare_and_wrapped_forms(tmp_path):
    data = [
        {
            "path": "v.mp4",
            "problem": "q1",
            "options": ["A. red", "B. blue"],
            "solution": "<answer>A</answer>",
            "problem_type": "multiple choice",
        },
        {"path": "v.mp4", "problem": "q2", "options": ["red", "blue"], "solution": "B"},
        {"path": "v.mp4", "problem": "q3", "solution": "<answer>2.5</answer>", "problem_type": "numerical"},
        {
            "path": "v.mp4",
            "problem": "q4",
            "options": ["U.S. coast", "B. inland"],
            "solution": "A",
            "problem_id": 42,
        },
    ]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data))
    items = load_videor1(path)
    assert items[0].options == ["red", "blue"] and items[0].solution == "A"
    assert items[1].options == ["red", "blue"] and items[1].solution == "B"
    assert items[2].options == [] and items[2].solution == "2.5" and items[2].problem_type == "numerical"
    # "U.S. coast" is not "A. ..." for position 0, so it is kept whole.
    assert items[3].options == ["U.S. coast", "inland"]
    assert [it.id for it in items] == ["in:0", "in:1", "in:2", "in:42"]
    assert items[0].video_path == str((tmp_path / "v.mp4").resolve())


def test_strip_helpers():
    assert strip_answer_tags("<answer> C </answer>") == "C"
    assert strip_answer_tags("C") == "C"
    assert strip_option_letter("C. green", 2) == "green"
    assert strip_option_letter("C. green", 0) == "C. green"
    assert strip_option_letter("A) red", 0) == "red"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"problem": "q", "options": ["a"], "solution": "A"}, r"item 1: missing field 'path'"),
        ({"path": "v.mp4", "options": ["a"], "solution": "A"}, r"item 1: missing field 'problem'"),
        ({"path": "v.mp4", "problem": "q", "options": ["a"]}, r"item 1: missing field 'solution'"),
        ({"path": "v.mp4", "problem": "q", "solution": "A"}, r"item 1: missing field 'options'"),
        ({"path": 3, "problem": "q", "options": ["a"], "solution": "A"}, r"item 1: field 'path' must be str"),
        ({"path": "v.mp4", "problem": "q", "options": "a,b", "solution": "A"}, r"item 1: field 'options'"),
        (
            {"path": "v.mp4", "problem": "q", "options": ["a", "b"], "solution": "C"},
            r"item 1: field 'solution'",
        ),
        (
            {"path": "v.mp4", "problem": "q", "options": [], "solution": "A"},
            r"item 1: field 'options' is empty",
        ),
        (
            {"path": "v.mp4", "problem": "q", "solution": "1", "problem_type": "essay"},
            r"item 1: field 'problem_type'",
        ),
        (
            {"path": "v.mp4", "problem": "q", "options": ["a"], "solution": "A", "evidence_path": "no.npy"},
            r"item 1: field 'evidence_path'",
        ),
        ("just a string", r"item 1: expected a JSON object"),
    ],
)
def test_field_errors_name_item_and_field(tmp_path, entry, message):
    good = {"path": "v.mp4", "problem": "q", "options": ["a", "b"], "solution": "A"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([good, entry]))
    with pytest.raises(ValueError, match=message):
        load_videor1(path)


def test_bad_evidence_array_is_rejected(tmp_path):
    np.save(tmp_path / "ev.npy", np.zeros((2, 3), dtype=bool))
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            [{"path": "v.mp4", "problem": "q", "options": ["a"], "solution": "A", "evidence_path": "ev.npy"}]
        )
    )
    with pytest.raises(ValueError, match=r"item 0: evidence .* \(T, h, w\) bool"):
        load_videor1(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_videor1(tmp_path / "missing.json")
    (tmp_path / "obj.json").write_text('{"path": "v.mp4"}')
    with pytest.raises(ValueError, match="JSON list"):
        load_videor1(tmp_path / "obj.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_videor1(tmp_path / "broken.json")


def test_save_requires_video_path(tmp_path):
    item = QAItem(id="x", problem="q", options=["a"], solution="A")
    with pytest.raises(ValueError, match="no video_path"):
        save_videor1([item], tmp_path / "d.json")
