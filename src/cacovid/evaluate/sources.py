"""Item sources: where an evaluation's QA items come from, and how to get one item back later.

Why: results name their data set as text ("synthetic:test", "videor1:/data/mlvu.json") together with
the world config, so a report made days later can regenerate an item's frames for a heat-map from
the results directory alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cacovid.types import QAItem

SYNTHETIC_PREFIX = "synthetic:"
VIDEOR1_PREFIX = "videor1:"


@dataclass
class ItemSource:
    """`dataset` names the items (stored in results); `items()` yields up to `n` of them in order;
    `world` is the synthetic world's config dict (None for files)."""

    dataset: str
    items: Callable[[], Iterator[QAItem]]
    n: int
    world: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def synthetic_source(world: Any = None, split: str = "test", n: int = 100, start: int = 0) -> ItemSource:
    """Items start..start+n-1 of a split of the synthetic world (`world`: WorldConfig, an override
    string like "frames=8", a dict of overrides, or None for the defaults)."""
    from cacovid.data.synthetic import SPLITS, SyntheticWorld, WorldConfig

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of items must be a positive integer, got {n!r}")
    config = world if isinstance(world, WorldConfig) else WorldConfig().with_overrides(world)
    synthetic = SyntheticWorld(config)
    synthetic.seed(split, start)  # validate now, not at the first item
    return ItemSource(
        dataset=f"{SYNTHETIC_PREFIX}{split}",
        items=lambda: synthetic.items(split, n, start=start),
        n=n,
        world=config.to_dict(),
        info={"start": start},
    )


def videor1_source(path: str | Path, n: int | None = None) -> ItemSource:
    """The first `n` items (all when None) of a Video-R1 style JSON file."""
    from cacovid.data.videor1 import load_videor1

    path = Path(path)
    items = load_videor1(path)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"number of items must be a positive integer, got {n!r}")
        items = items[:n]
    if not items:
        raise ValueError(f"{path} holds no items")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: item ids must be unique (results are keyed by item id)")
    return ItemSource(dataset=f"{VIDEOR1_PREFIX}{path.resolve()}", items=lambda: iter(items), n=len(items))


def source_from_args(
    data: str, *, split: str = "test", world: Any = None, n: int | None = None
) -> ItemSource:
    """The CLI's `--data synthetic|PATH.json` (plus --split, --world, --n) as a source."""
    if data == "synthetic":
        return synthetic_source(world, split, 100 if n is None else n)
    if world:
        raise ValueError("--world only applies to --data synthetic")
    return videor1_source(data, n)


def find_item(run: dict[str, Any], item_id: str, index: int | None = None) -> QAItem | None:
    """Rebuild one evaluated item from a run description (run.json), or None if it is not reachable.

    Synthetic items are regenerated from the world config and their index; file items are looked up
    by id in their JSON file.
    """
    dataset = str(run.get("dataset") or "")
    if dataset.startswith(SYNTHETIC_PREFIX):
        from cacovid.data.synthetic import SyntheticWorld, WorldConfig

        if index is None:
            return None
        world = WorldConfig.from_dict(run["world"]) if run.get("world") else WorldConfig()
        item = SyntheticWorld(world).item(dataset[len(SYNTHETIC_PREFIX) :], int(index))
        return item if item.id == item_id else None
    if dataset.startswith(VIDEOR1_PREFIX):
        from cacovid.data.videor1 import load_videor1

        path = Path(dataset[len(VIDEOR1_PREFIX) :])
        if not path.is_file():
            return None
        return next((it for it in load_videor1(path) if it.id == item_id), None)
    return None


def item_frames(item: QAItem, max_frames: int = 32) -> np.ndarray | None:
    """(F, H, W, 3) uint8 frames of an item, or None when its video cannot be read."""
    if item.frames is not None:
        return np.asarray(item.frames)
    if not item.video_path:
        return None
    from cacovid.models.frames import read_frames

    try:
        return read_frames(item.video_path, max_frames)
    except (OSError, ValueError):
        return None
