"""Item sources (`cacovid.data.sources`): the one loader of training, tuning and evaluation items."""

from __future__ import annotations

import json

import pytest

from cacovid.data.sources import WorldItems, find_item, source_from_args, synthetic_source, videor1_source
from cacovid.data.synthetic import SyntheticWorld, WorldConfig
from cacovid.data.synthetic.config import DEFAULT_WORLD, world_from_overrides

WORLD = "frames=4,target_frames=1:2"


def _same_items(a, b) -> bool:
    """Two items are the same item: ids, questions, answers, every frame and evidence cell."""
    return (
        a.id == b.id
        and a.prompt_text() == b.prompt_text()
        and a.solution == b.solution
        and a.frames.tobytes() == b.frames.tobytes()
        and a.evidence.tobytes() == b.evidence.tobytes()
    )


def test_synthetic_source_is_lazy_indexable_and_named():
    source = source_from_args("synthetic", split="val", world=WORLD, n=3, start=2)
    assert source.dataset == "synthetic:val" and source.n == 3 and source.info == {"start": 2}
    world = SyntheticWorld(WorldConfig.preset("decoys").with_overrides(WORLD))  # the CLI's default world
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
    assert source_from_args("synthetic", world=config, n=1).world == config.to_dict()  # taken as it is


@pytest.mark.parametrize("world", [None, "", "  ", DEFAULT_WORLD])
def test_the_command_line_default_world_is_decoys(world):
    source = source_from_args("synthetic", world=world, n=2)
    assert WorldConfig.from_dict(source.world).preset_name == "decoys"
    assert source.sequence[0].counterfactual is not None  # only the decoys world asks one
    # the Python API keeps the classic world
    assert WorldConfig.from_dict(synthetic_source(None, "test", 1).world).preset_name == "classic"


def test_preset_classic_gives_the_classic_items_byte_for_byte():
    source = source_from_args("synthetic", split="test", world="preset=classic", n=4)
    assert source.world == WorldConfig().to_dict()
    classic = SyntheticWorld(WorldConfig())
    for i, item in enumerate(source.items()):
        assert _same_items(item, classic.item("test", i)), item.id
    shifted = source_from_args("synthetic", world="preset=classic,frames=8", n=1).world
    assert shifted == WorldConfig(frames=8).to_dict()


def test_keys_without_a_preset_change_the_decoys_world():
    source = source_from_args("synthetic", world="frames=8,target_frames=3:5", n=1)
    config = WorldConfig.from_dict(source.world)
    decoys = WorldConfig.preset("decoys")
    assert (config.frames, config.target_frames) == (8, (3, 5))
    assert (config.num_decoys, config.families, config.target_size) == (
        decoys.num_decoys,
        decoys.families,
        decoys.target_size,
    )
    assert world_from_overrides("frames=32") == WorldConfig.preset("decoys").with_overrides("frames=32")
    assert world_from_overrides({"frames": "32"}).frames == 32
    assert world_from_overrides("frames=32", "classic") == WorldConfig(frames=32)


@pytest.mark.parametrize(
    ("world", "message"),
    [
        # decoys shows every target for 6-10 frames: 8 frames is too few unless target_frames says so
        ("frames=8", r"target_frames .* default world, preset=decoys; start with preset=classic"),
        ("families=color", r"cannot be asked with decoys .* preset=classic for the classic world"),
        ("colour=3", r"unknown world config key 'colour'; known keys: \[[^]]*\]$"),
        ("preset=nope", "unknown world preset 'nope'"),
    ],
)
def test_command_line_world_errors_name_the_default_preset(world, message):
    with pytest.raises(ValueError, match=message):
        source_from_args("synthetic", world=world, n=1)


def test_an_old_run_without_a_world_still_means_the_classic_world():
    """Run files written before the decoys default may hold no world (or an empty one): they were
    made on `WorldConfig()`, and `find_item` must rebuild the classic items from them."""
    classic = SyntheticWorld(WorldConfig()).item("test", 3)
    for run in ({"dataset": "synthetic:test"}, {"dataset": "synthetic:test", "world": {}}):
        found = find_item(run, classic.id, 3)
        assert found is not None and _same_items(found, classic)
        assert found.counterfactual is None
    # a new run records its resolved world, so it finds the decoys item it was made on
    source = source_from_args("synthetic", split="test", n=4)
    run = {"dataset": source.dataset, "world": source.world}
    assert _same_items(find_item(run, "synthetic:test:3", 3), source.sequence[3])
    assert find_item(run, "synthetic:test:3", 3).counterfactual is not None
