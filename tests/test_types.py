"""The retention-ratio rules of `cacovid.types`: the exact budget and the one ratio-list parser."""

from __future__ import annotations

import numpy as np
import pytest

from cacovid.types import QAItem, parse_ratios, token_budget


def test_parse_ratios_reads_a_comma_list():
    assert parse_ratios("0.25,0.1") == [0.25, 0.1]
    assert parse_ratios(" 0.5 , 1, ") == [0.5, 1.0]
    assert parse_ratios("1e-2") == [0.01]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "such as 0.25,0.1"),
        (" , ", "such as 0.25,0.1"),
        ("0.25,abc", "'abc' is not a number"),
        ("0", r"must be in \(0, 1\], got '0'"),
        ("-0.1", r"must be in \(0, 1\]"),
        ("nan", r"must be in \(0, 1\]"),
        ("0.1,25", r"got '25' \(a percentage\? 25 % is 0.25\)"),
        ("1.5", r"must be in \(0, 1\], got '1.5'$"),
    ],
)
def test_parse_ratios_names_the_entry_at_fault(text, message):
    with pytest.raises(ValueError, match=message):
        parse_ratios(text)


def test_parsed_ratios_are_valid_budgets():
    assert [token_budget(490, r) for r in parse_ratios("1,0.1,0.001")] == [490, 49, 1]


def test_shows_same_video_needs_equal_frames_or_the_same_file():
    frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    a = QAItem(id="a", problem="q", options=["x", "y"], solution="A", frames=frames)
    assert a.shows_same_video(a)
    assert a.shows_same_video(QAItem(id="b", problem="r", options=["x"], solution="A", frames=frames.copy()))
    changed = frames.copy()
    changed[1, 3, 3, 0] = 1
    assert not a.shows_same_video(QAItem(id="c", problem="q", options=["x"], solution="A", frames=changed))
    assert not a.shows_same_video(QAItem(id="d", problem="q", options=["x"], solution="A", frames=frames[:1]))
    f1 = QAItem(id="e", problem="q", options=["x"], solution="A", video_path="v.mp4")
    assert f1.shows_same_video(QAItem(id="f", problem="r", options=["x"], solution="A", video_path="v.mp4"))
    assert not f1.shows_same_video(
        QAItem(id="g", problem="r", options=["x"], solution="A", video_path="w.mp4")
    )
    assert not f1.shows_same_video(a) and not a.shows_same_video(f1)
    nothing = QAItem(id="h", problem="q", options=["x"], solution="A")
    assert not nothing.shows_same_video(nothing)
