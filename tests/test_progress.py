"""`cacovid.progress`: plain lines at a steady pace when the output is not a terminal, a bar when it is."""

from __future__ import annotations

import io

import pytest

from cacovid.progress import Progress, format_duration


class FakeClock:
    """A clock the test moves by hand: the pace rule is checked without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reporter(total, clock, **kwargs) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress("eval", total, unit="items", stream=out, clock=clock, **kwargs), out


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 185, 3725, float("nan"), -1)] == [
        "0s",
        "42s",
        "3m05s",
        "1h02m",
        "?",
        "?",
    ]


def test_a_line_names_the_count_the_times_and_the_info():
    clock = FakeClock()
    progress, out = _reporter(200, clock)
    with progress:
        for _ in range(20):
            clock.now += 1.0
            progress.advance(info="0 errors")
    assert out.getvalue() == "eval 20/200 items (10%) | 20s elapsed | ~3m00s left | 0 errors\n"


def test_lines_every_tenth_of_the_total_when_items_are_fast():
    clock = FakeClock()
    progress, out = _reporter(50, clock)
    with progress:
        for _ in range(50):
            clock.now += 1.0  # 50 s in all: every 5 items is 10 %, well within 30 s
            progress.advance()
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == [
        f"eval {5 * k}/50 items ({10 * k}%)" for k in range(1, 11)
    ]
    assert lines[-1].startswith("eval 50/50 items (100%) | 50s elapsed | ~0s left")


def test_lines_every_30_seconds_when_items_are_slow():
    clock = FakeClock()
    progress, out = _reporter(1000, clock)  # 10 % = 100 items; each takes 20 s
    with progress:
        for _ in range(6):
            clock.now += 20.0
            progress.advance()
    counts = [line.split(" | ")[0] for line in out.getvalue().splitlines()]
    # 20 s: no line; 40 s: 30 s passed since the start; 60 s: only 20 s since; 80 s: 40 s since; …
    assert counts == ["eval 2/1000 items (0%)", "eval 4/1000 items (0%)", "eval 6/1000 items (1%)"]


def test_whichever_comes_first():
    clock = FakeClock()
    progress, out = _reporter(10, clock, every_seconds=30.0)
    with progress:
        clock.now += 100.0  # slow first item, crossing 10 % too: one line, not two
        progress.advance()
        clock.now += 1.0
        progress.advance(info="x")  # 20 % crossed 1 s later: a line by share
        clock.now += 31.0
        progress.update(info="y")  # no new item, but 31 s and a new info: a line by time
        clock.now += 31.0
        progress.update(info="y")  # nothing changed: no line however long it has been
    assert [line.split(" | ")[0] for line in out.getvalue().splitlines()] == [
        "eval 1/10 items (10%)",
        "eval 2/10 items (20%)",
        "eval 2/10 items (20%)",
    ]


def test_the_final_count_is_always_written():
    clock = FakeClock()
    progress, out = _reporter(1000, clock)
    with progress:
        for _ in range(3):
            clock.now += 1.0
            progress.advance()
    assert out.getvalue().splitlines() == ["eval 3/1000 items (0%) | 3s elapsed | ~16m37s left"]


def test_skipped_units_count_but_do_not_set_the_pace():
    clock = FakeClock()
    progress, out = _reporter(100, clock)
    with progress:
        progress.skip(50)  # a resumed run: half was done before
        assert out.getvalue() == ""
        for _ in range(10):
            clock.now += 2.0
            progress.advance()
    assert out.getvalue().splitlines()[-1] == "eval 60/100 items (60%) | 20s elapsed | ~1m20s left"


def test_the_pace_starts_after_the_first_unit_which_pays_for_the_setup():
    clock = FakeClock()
    progress, out = _reporter(10, clock, completed=5)  # resumed from a count, too
    with progress:
        clock.now += 40.0  # workers starting, a model loading …
        progress.update(completed=6)
        clock.now += 3.0
        progress.update(completed=7)
    assert out.getvalue().splitlines() == [
        "eval 6/10 items (60%) | 40s elapsed",
        "eval 7/10 items (70%) | 43s elapsed | ~9s left",
    ]


def test_an_unknown_total_reports_by_time_alone():
    clock = FakeClock()
    out = io.StringIO()
    with Progress("distill", None, unit="steps", stream=out, clock=clock) as progress:
        for step in range(1, 5):
            clock.now += 20.0
            progress.update(completed=step)
        progress.update(total=10)  # known late
        clock.now += 40.0
        progress.update(completed=5)
    assert out.getvalue().splitlines() == [
        "distill 2 steps | 40s elapsed",
        "distill 4 steps | 1m20s elapsed",
        "distill 5/10 steps (50%) | 2m00s elapsed | ~2m05s left",
    ]


def test_log_prints_a_line_and_disabled_progress_prints_only_logs():
    clock = FakeClock()
    progress, out = _reporter(2, clock, enabled=False)
    with progress:
        progress.advance()
        progress.log("step 1 val 0.5")
        progress.advance()
    assert out.getvalue() == "step 1 val 0.5\n"


def test_a_terminal_gets_the_bar_not_lines():
    out = io.StringIO()
    with Progress("eval", 3, stream=out, terminal=True) as progress:
        for _ in range(3):
            progress.advance(info="ok")
        progress.log("a message")
    text = out.getvalue()
    assert "a message" in text and "3/3" in text
    assert " | " not in text  # the plain line's separator: no plain lines


def test_bad_pace_settings_are_refused():
    with pytest.raises(ValueError, match="every_fraction"):
        Progress("x", 10, every_fraction=0.0)
    with pytest.raises(ValueError, match="every_seconds"):
        Progress("x", 10, every_seconds=0)


def test_the_default_stream_is_stdout_at_construction(capsys):
    with Progress("eval", 1, terminal=False) as progress:
        progress.advance()
    assert capsys.readouterr().out.startswith("eval 1/1 (100%) | ")
