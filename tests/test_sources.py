"""Item sources (`cacovid.data.sources`): the one loader of training, tuning and evaluation items."""

from __future__ import annotations

import json

import pytest

from cacovid.data.sources import WorldItems, find_item, source_from_args, synthetic_source, videor1_source
from cacovid.data.synthetic import SyntheticWorld, WorldConfig

WORLD = "frames=4,target_frames=1:2"


def test_synthetic_source_is_lazy_indexable_and_named():
    source = source_from_args("synthetic", split="val", world=WORLD, n=3, start=2)
    assert source.dataset == "synthetic:val" and source.n == 3 and source.info == {"start": 2}
    world = SyntheticWorld(WorldConfig().with_overrides(WORLD))
    assert source.world == world.config.to_dict()
    assert isinstance(source.sequence, WorldItems)
    want = [it.id for it in world.items("val", 3, start=2)]
    assert [it.id for it in source.items()] == want
    assert source.sequence[-1].id == want[-1] and [it.id for it in source.sequence[1:]] == want[1:]
    assert source_from_args("synthetic", world=WORLD).n == 100
    assert source_from_args("synthetic", world=WORLD, synthetic_n=200).n == 200
    run = {"dataset": source.dataset, "world": source.world}
    assert find_item(run, want[0], 2).id == want[0]
    assert find_item(run, want[0], 3) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "nosuch"}, "unknown split"),
        ({"n": 0}, "positive integer"),
        ({"world": "nosuch=1"}, "nosuch"),
    ],
)
def test_synthetic_source_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        source_from_args("synthetic", **kwargs)


def _write(tmp_path, ids):
    entries = [
        {"id": i, "path": "v.mp4", "problem": "how many?", "solution": "3", "problem_type": "numerical"}
        for i in ids
    ]
    path = tmp_path / "items.json"
    path.write_text(json.dumps(entries))
    return path


def test_videor1_source_slices_and_checks_ids(tmp_path):
    path = _write(tmp_path, ["a", "b", "c", "c"])
    source = source_from_args(str(path), n=2, start=1)
    assert source.dataset == f"videor1:{path.resolve()}" and source.world is None
    assert [it.id for it in source.items()] == ["b", "c"]
    with pytest.raises(ValueError, match="ids must be unique"):
        videor1_source(path)
    assert videor1_source(path, unique_ids=False).n == 4  # training does not key by id
    with pytest.raises(ValueError, match="holds no items"):
        videor1_source(path, 2, start=4)
    with pytest.raises(ValueError, match="only applies to --data synthetic"):
        source_from_args(str(path), world=WORLD)
    run = {"dataset": source.dataset}
    assert find_item(run, "b").id == "b" and find_item(run, "z") is None


def test_synthetic_source_accepts_a_config():
    config = WorldConfig().with_overrides(WORLD)
    assert synthetic_source(config, "test", 1).world == config.to_dict()
