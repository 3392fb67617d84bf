"""Multiple-choice video benchmarks read from their public annotation files: `NAME:ROOT` specs.

Why one registry: the command line names a benchmark and the folder its files were unpacked into
(`--data videomme:/data/Video-MME`), and training, tuning and evaluation all read that text through
`cacovid.data.sources`. Each loader reads its benchmark's own layout (docs/benchmarks.md), builds
items with the benchmark's own prompt and the correct option's letter, and tags each item with its
categories (`meta["categories"]`, the first one also as `family`) for per-category accuracy.

| name | what |
|---|---|
| `videomme`, `videomme-short`, `-medium`, `-long` | Video-MME, all or one duration, no subtitles |
| `mlvu-dev`, `mlvu-test` | MLVU multiple-choice tasks; the split is always named |
| `longvideobench` | LongVideoBench validation split, video only |
| `mvbench` | MVBench, every task file present |
| `egoschema` | EgoSchema's public 500-question subset |
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from cacovid.data.benchmarks.common import AnnotationError, BenchmarkItem
from cacovid.data.benchmarks.egoschema import load_egoschema
from cacovid.data.benchmarks.longvideobench import load_longvideobench
from cacovid.data.benchmarks.mlvu import load_mlvu
from cacovid.data.benchmarks.mvbench import load_mvbench
from cacovid.data.benchmarks.videomme import load_videomme

__all__ = [
    "BENCHMARKS",
    "AnnotationError",
    "BenchmarkItem",
    "load_benchmark",
    "parse_benchmark_spec",
]

Loader = Callable[[Path], list[BenchmarkItem]]

BENCHMARKS: dict[str, Loader] = {
    "videomme": load_videomme,
    "videomme-short": lambda root: load_videomme(root, ("short",)),
    "videomme-medium": lambda root: load_videomme(root, ("medium",)),
    "videomme-long": lambda root: load_videomme(root, ("long",)),
    "mlvu-dev": lambda root: load_mlvu(root, "dev"),
    "mlvu-test": lambda root: load_mlvu(root, "test"),
    "longvideobench": load_longvideobench,
    "mvbench": load_mvbench,
    "egoschema": load_egoschema,
}
# Names that need more than themselves: what to write instead.
_INCOMPLETE = {
    "mlvu": "name the MLVU split: mlvu-dev:ROOT or mlvu-test:ROOT",
    "lvb": "LongVideoBench is longvideobench:ROOT (its validation split)",
    "longvideobench-val": "LongVideoBench is longvideobench:ROOT (its validation split)",
    "egoschema-subset": "EgoSchema is egoschema:ROOT (its public 500-question subset)",
}
_SPEC = re.compile(r"^([a-z][a-z0-9_-]*):(.+)$")


def parse_benchmark_spec(text: str) -> tuple[str, Path] | None:
    """`NAME:ROOT` → (name, root) for a known benchmark; None for text that names no benchmark
    (a Video-R1 JSON path). A `name:` prefix that looks like a benchmark but is not one (a typo,
    `mlvu:` without its split) is a ValueError listing the names, unless the text is an existing file.
    """
    match = _SPEC.match(text)
    if match is None:
        return None
    name, rest = match.group(1), match.group(2)
    if name in BENCHMARKS:
        return name, Path(rest).expanduser()
    if Path(text).exists():
        return None
    if name in _INCOMPLETE:
        raise ValueError(f"--data {text!r}: {_INCOMPLETE[name]}")
    raise ValueError(
        f"--data {text!r}: unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} "
        "(or give a Video-R1 JSON file, or 'synthetic')"
    )


def load_benchmark(name: str, root: str | Path) -> list[BenchmarkItem]:
    """The items of benchmark `name` unpacked under `root` (see docs/benchmarks.md for layouts)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{name}: {root} does not exist")
    return BENCHMARKS[name](root)
