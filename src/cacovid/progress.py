"""Progress of a long loop, readable at a terminal and in a log file alike.

Why a module of its own: every long command (demo, eval, distill, toy train, filter, policy training)
counts items or steps. At a terminal a rich bar redraws in place; but when the output goes to a file
or a pipe (`cacovid demo > log`, CI, `nohup`) rich draws nothing until the end and the log stays
silent for minutes. `Progress` draws the bar at a terminal and otherwise writes one plain line at a
steady pace: whenever the count crosses another `every_fraction` of the total (10 % by default) or
`every_seconds` (30 s) have passed since the last line, whichever comes first, and once at the end.
A line reads

    eval 40/200 items (20%) | 1m05s elapsed | ~4m20s left | 3 errors

The module needs nothing of the package (rich is imported only when a bar is drawn), so any layer can
use it. The whole interface:

    with Progress("eval", total=200, unit="items") as progress:
        for item in items:
            ...                                # one unit of work
            progress.advance(info="3 errors")  # or progress.update(completed=step, info=...)
            progress.log("a message")          # printed above the bar, or as a line of its own

The time left is estimated from the pace since the first unit (which also pays for the loop's setup).
`skip(n)` counts units that an earlier run already did (a resumed run): they count towards the total
but not towards that pace. Lines are written from the calls themselves (no thread): the 30 s rule is
checked at every `advance` or `update`, and writes only when the count or the info has changed.
`enabled=False` (a `--no-progress` flag, or a process other than the one that reports) shows nothing
but `log` messages.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m: short enough for a progress line, exact enough for a wait."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """A progress reporter: a rich bar at a terminal, plain lines at a steady pace elsewhere.

    `label` starts every line; `total` is the number of units (None while unknown: lines then come
    by time alone, without a share or a time left); `completed` is where a resumed loop starts (not
    counted in the pace); `unit` names what is counted ("items", "steps"). `enabled=False` shows no
    progress at all (`log` still prints). `stream` defaults to sys.stdout as it is at construction
    (so output redirected later, by a test runner say, is honoured); `terminal` defaults to whether
    that stream is a terminal. `every_fraction` and `every_seconds` set the pace of plain lines;
    `clock` (seconds, monotonic) is there for tests.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        completed: int = 0,
        unit: str = "",
        enabled: bool = True,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        every_fraction: float = 0.1,
        every_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 < every_fraction <= 1.0:
            raise ValueError(f"every_fraction must lie in (0, 1], got {every_fraction!r}")
        if every_seconds <= 0:
            raise ValueError(f"every_seconds must be positive, got {every_seconds!r}")
        self.label, self.unit, self.enabled = label, unit, enabled
        self.total = None if total is None else int(total)
        self.completed = int(completed)
        self.info = ""
        self.stream = stream if stream is not None else sys.stdout
        self.terminal = _is_terminal(self.stream) if terminal is None else terminal
        self.every_fraction, self.every_seconds, self.clock = every_fraction, every_seconds, clock
        self._start = clock()
        # The pace is measured from the first unit done on: the first one pays for the loop's setup
        # (workers starting, models loading), which the units left will not.
        self._pace_start: float | None = None
        self._pace_base = self.completed
        self._last_line_at, self._last_state = self._start, (self.completed, self.info)
        self._bar: Any = None
        self._task: Any = None

    # ---- context -----------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        if self.enabled and self.terminal:
            self._start_bar()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the bar, or write the final line if the last one did not show the final count."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        elif self.enabled and not self.terminal and self.completed != self._last_state[0]:
            self._write_line()

    # ---- counting ----------------------------------------------------------------------------
    def advance(self, n: int = 1, info: str | None = None) -> None:
        """`n` more units done (by this run); `info` replaces the short text at the line's end."""
        self.update(completed=self.completed + n, info=info)

    def skip(self, n: int = 1) -> None:
        """`n` units an earlier run did: counted, but not in the pace (no line of their own)."""
        self.completed += n
        self._pace_base += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed)

    def update(self, completed: int | None = None, total: int | None = None, info: str | None = None) -> None:
        """Set the count, the total (known late, or changed) and/or the info text; writes a line when
        the pace rule says so."""
        if completed is not None:
            if self._pace_start is None and int(completed) != self.completed:
                self._pace_start, self._pace_base = self.clock(), int(completed)
            self.completed = int(completed)
        if total is not None:
            self.total = int(total)
        if info is not None:
            self.info = info
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed, total=self.total, info=self.info)
        elif not self.terminal and self._line_due():
            self._write_line()

    def log(self, message: str) -> None:
        """Print a message: above the bar at a terminal, as a line of its own elsewhere."""
        if self._bar is not None:
            self._bar.console.print(message, soft_wrap=True, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    # ---- figures -----------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds since the reporter was made."""
        return self.clock() - self._start

    def remaining(self) -> float | None:
        """Estimated seconds left at the pace of this run's units since its first one (None: not
        known yet, before the second unit)."""
        if self.total is not None and self.completed >= self.total:
            return 0.0
        done = self.completed - self._pace_base
        if self.total is None or self._pace_start is None or done <= 0:
            return None
        return (self.total - self.completed) * (self.clock() - self._pace_start) / done

    def line(self) -> str:
        """The plain progress line for the current state (see the module docstring)."""
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            pct = 100.0 * self.completed / self.total
            count = f"{self.completed}/{self.total}{unit} ({pct:.0f}%)"
        else:
            count = f"{self.completed}{unit}"
        parts = [f"{self.label} {count}", f"{format_duration(self.elapsed())} elapsed"]
        left = self.remaining()
        if left is not None:
            parts.append(f"~{format_duration(left)} left")
        if self.info:
            parts.append(self.info)
        return " | ".join(parts)

    # ---- internals ---------------------------------------------------------------------------
    def _mark(self, count: int) -> int:
        """Index of the last `every_fraction` mark of the total at or below `count`."""
        step = self.every_fraction * (self.total or 0)
        return math.floor(count / step + 1e-9) if step > 0 else 0

    def _line_due(self) -> bool:
        """A line when the count crossed another `every_fraction` mark since the last line, or when
        `every_seconds` passed and something (count or info) changed since then."""
        last_count = self._last_state[0]
        if self.total is not None and self._mark(self.completed) > self._mark(last_count):
            return True
        changed = (self.completed, self.info) != self._last_state
        return changed and self.clock() - self._last_line_at >= self.every_seconds

    def _write_line(self) -> None:
        self._last_line_at, self._last_state = self.clock(), (self.completed, self.info)
        print(self.line(), file=self.stream, flush=True)

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        console = Console(file=self.stream, force_terminal=True) if self.stream is not sys.stdout else None
        self._bar = RichProgress(
            TextColumn(f"[bold]{escape(self.label)}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self._bar.__enter__()
        self._task = self._bar.add_task(
            self.label, total=self.total, completed=self.completed, info=self.info
        )
