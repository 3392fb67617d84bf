"""Item sources: the QA items of the embedded synthetic world, of a Video-R1 JSON file or of a
multiple-choice benchmark, as one type.

Why one loader: training, selection tuning and evaluation all read the command line's
`--data synthetic|PATH.json|NAME:ROOT` (with `--split`, `--world`, `--n`) the same way
(`source_from_args`). `NAME:ROOT` names a benchmark of `cacovid.data.benchmarks` and the folder its
public files were unpacked into (`videomme:/data/Video-MME`, `mlvu-dev:/data/MLVU`; the layouts are
in docs/benchmarks.md). A source names its items as text ("synthetic:test",
"videor1:/data/items.json", "mvbench:/data/MVBench") and keeps the world config, so results record
where their items came from, and `find_item` rebuilds any one of them later from that record alone
(a report made days later regenerates an item's frames for a heat-map). Synthetic items are
generated when indexed, never held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from cacovid.data.benchmarks import BENCHMARKS, load_benchmark, parse_benchmark_spec
from cacovid.data.synthetic import SPLITS, SyntheticWorld, WorldConfig
from cacovid.data.synthetic.config import world_from_overrides
from cacovid.data.videor1 import load_videor1
from cacovid.types import QAItem

__all__ = [
    "SYNTHETIC_PREFIX",
    "VIDEOR1_PREFIX",
    "ItemSource",
    "WorldItems",
    "benchmark_source",
    "find_item",
    "source_from_args",
    "synthetic_source",
    "videor1_source",
]

SYNTHETIC_PREFIX = "synthetic:"
VIDEOR1_PREFIX = "videor1:"


class WorldItems(Sequence[QAItem]):
    """Items start … start+n−1 of a synthetic-world split, generated when indexed (not held in memory)."""

    def __init__(self, world: SyntheticWorld, split: str, n: int, start: int = 0) -> None:
        if n < 0:
            raise ValueError(f"number of items must be >= 0, got {n}")
        world.seed(split, start)  # validates split and start
        self.world, self.split, self.n, self.start = world, split, int(n), int(start)

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> QAItem: ...

    @overload
    def __getitem__(self, i: slice) -> list[QAItem]: ...

    def __getitem__(self, i: int | slice) -> QAItem | list[QAItem]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.world.item(self.split, self.start + (i % self.n))


@dataclass
class ItemSource:
    """`dataset` names the items (stored in results); `sequence` holds them in order (indexable; a
    world's are generated when indexed); `world` is the synthetic world's config dict (None for files)."""

    dataset: str
    sequence: Sequence[QAItem]
    world: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """The number of items."""
        return len(self.sequence)

    def items(self) -> Iterator[QAItem]:
        """The items, in order."""
        return iter(self.sequence)


def _check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of items must be a positive integer, got {n!r}")
    return n


def synthetic_source(world: Any = None, split: str = "test", n: int = 100, start: int = 0) -> ItemSource:
    """Items start..start+n-1 of a split of the synthetic world (`world`: WorldConfig, an override
    string like "frames=8", a dict of overrides, or None; overrides without a preset change
    `WorldConfig()`, the classic world, where the command line's `source_from_args` starts from
    `preset=decoys`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    n = _check_count(n)
    config = world if isinstance(world, WorldConfig) else WorldConfig().with_overrides(world)
    return ItemSource(
        dataset=f"{SYNTHETIC_PREFIX}{split}",
        sequence=WorldItems(SyntheticWorld(config), split, n, start),  # validates start now
        world=config.to_dict(),
        info={"start": start},
    )


def _slice(items: Sequence[QAItem], n: int | None, start: int, what: str, unique_ids: bool) -> list[QAItem]:
    """Items start..start+n-1 (to the end when n is None), checked to be non-empty and, where
    asked, to carry distinct ids."""
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    items = list(items[start:] if n is None else items[start : start + _check_count(n)])
    if not items:
        raise ValueError(f"{what} holds no items")
    if unique_ids:
        seen: set[str] = set()
        for it in items:
            if it.id in seen:
                raise ValueError(
                    f"{what}: item ids must be unique (results are keyed by item id); {it.id!r} repeats"
                )
            seen.add(it.id)
    return items


def videor1_source(
    path: str | Path, n: int | None = None, *, start: int = 0, unique_ids: bool = True
) -> ItemSource:
    """Items start..start+n-1 (to the end when `n` is None) of a Video-R1 style JSON file.

    `unique_ids`: refuse a file whose item ids repeat. Evaluation needs distinct ids (its results are
    keyed by item id); training and tuning do not.
    """
    path = Path(path)
    items = _slice(load_videor1(path), n, start, str(path), unique_ids)
    return ItemSource(dataset=f"{VIDEOR1_PREFIX}{path.resolve()}", sequence=items)


def benchmark_source(
    name: str, root: str | Path, n: int | None = None, *, start: int = 0, unique_ids: bool = True
) -> ItemSource:
    """Items start..start+n-1 (to the end when `n` is None) of benchmark `name` under `root`.

    The dataset is named "NAME:ABSOLUTE_ROOT", so a run records which files it read.
    """
    root = Path(root)
    items = _slice(load_benchmark(name, root), n, start, f"{name}:{root}", unique_ids)
    return ItemSource(dataset=f"{name}:{root.resolve()}", sequence=items, info={"benchmark": name})


def source_from_args(
    data: str,
    *,
    split: str = "test",
    world: Any = None,
    n: int | None = None,
    start: int = 0,
    synthetic_n: int = 100,
    unique_ids: bool = True,
) -> ItemSource:
    """The command line's `--data synthetic|PATH.json|NAME:ROOT` (plus --split, --world, --n) as a
    source.

    `n` None means `synthetic_n` items of the world, or every item of a file or benchmark; `split`
    and `world` apply to the world only (a benchmark's split is part of its name: `mlvu-dev`).
    `world` is read as the command line reads `--world` (`world_from_overrides`): the default world
    is `preset=decoys` and keys without a preset change its values, where `synthetic_source`, the
    Python API, starts from `WorldConfig()` (the classic world). The source records the resolved
    world, so result files say which world they used whatever the default.
    """
    if data == "synthetic":
        return synthetic_source(world_from_overrides(world), split, synthetic_n if n is None else n, start)
    if world:
        raise ValueError("--world only applies to --data synthetic")
    spec = parse_benchmark_spec(data)
    if spec is not None:
        return benchmark_source(spec[0], spec[1], n, start=start, unique_ids=unique_ids)
    return videor1_source(data, n, start=start, unique_ids=unique_ids)


def find_item(run: dict[str, Any], item_id: str, index: int | None = None) -> QAItem | None:
    """Rebuild one evaluated item from a run description (run.json), or None if it is not reachable.

    Synthetic items are regenerated from the world config and their index; file and benchmark
    items are looked up by id in their annotation files.
    """
    dataset = str(run.get("dataset") or "")
    if dataset.startswith(SYNTHETIC_PREFIX):
        if index is None:
            return None
        # Run files record the resolved world; one without a world predates that and was made on
        # `WorldConfig()`, the classic world (never the command line's default world).
        world = WorldConfig.from_dict(run["world"]) if run.get("world") else WorldConfig()
        item = SyntheticWorld(world).item(dataset[len(SYNTHETIC_PREFIX) :], int(index))
        return item if item.id == item_id else None
    if dataset.startswith(VIDEOR1_PREFIX):
        path = Path(dataset[len(VIDEOR1_PREFIX) :])
        if not path.is_file():
            return None
        return next((it for it in load_videor1(path) if it.id == item_id), None)
    name, _, root = dataset.partition(":")
    if name in BENCHMARKS and root:
        try:
            items = load_benchmark(name, root)
        except (OSError, ValueError):  # the files moved or changed since the run
            return None
        return next((it for it in items if it.id == item_id), None)
    return None
