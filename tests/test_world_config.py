"""WorldConfig: defaults, `--world` override parsing, validation errors, serialisation."""

from __future__ import annotations

import json

import pytest

from cacovid.data.synthetic import FAMILIES, SyntheticWorld, WorldConfig, parse_world_overrides
from cacovid.data.synthetic.config import DEFAULT_FAMILIES


def test_defaults_match_the_spec():
    cfg = WorldConfig()
    assert (cfg.frames, cfg.frame_size, cfg.token_grid) == (16, 112, 7)
    assert (cfg.num_distractors, cfg.num_salient, cfg.distractor_salience) == (5, 2, 1.0)
    assert cfg.target_size == (14, 20) and cfg.target_frames == (3, 5)
    assert cfg.families == DEFAULT_FAMILIES and cfg.seed_offset == 0
    assert set(DEFAULT_FAMILIES) == set(FAMILIES) - {"shape", "count"}
    assert cfg.cell_size == 16 and cfg.num_tokens == 784 and cfg.evidence_min_pixels == 26
    assert cfg.count_range == (3, 6)


def test_parse_world_overrides():
    assert parse_world_overrides("") == {}
    assert parse_world_overrides(None) == {}
    assert parse_world_overrides(" frames=8 , target_size=14:20 ") == {"frames": "8", "target_size": "14:20"}
    for bad, message in [
        ("frames", "KEY=VALUE"),
        ("frames=8,,seed_offset=1", "empty entry"),
        ("=3", "empty key"),
        ("frames=8,frames=9", "twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_world_overrides(bad)


def test_with_overrides_parses_each_kind():
    cfg = WorldConfig().with_overrides(
        parse_world_overrides(
            "frames=8,target_size=14:20,target_frames=3,distractor_salience=0.25,families=color:shape,seed_offset=7"
        )
    )
    assert cfg.frames == 8 and cfg.target_size == (14, 20) and cfg.target_frames == (3, 3)
    assert cfg.distractor_salience == 0.25 and cfg.families == ("color", "shape") and cfg.seed_offset == 7
    # A string is parsed too, and the original is unchanged (frozen).
    assert WorldConfig().with_overrides("num_distractors=3").num_distractors == 3
    assert WorldConfig().num_distractors == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour=red", r"unknown world config key 'colour'"),
        ("frames=eight", r"frames='eight': expected an integer"),
        ("distractor_salience=lots", r"distractor_salience='lots': expected a number"),
        ("distractor_salience=nan", "finite"),
        ("target_size=1:2:3", "LOW:HIGH"),
        ("target_size=20:14", "target_size"),
        ("target_size=2:3", "target_size"),
        ("target_frames=0:2", "target_frames"),
        ("target_frames=2:40", "target_frames"),
        ("frames=1", "frames"),
        ("frames=65", "frames"),
        ("frame_size=100", "divisible"),
        ("num_salient=9", "num_salient"),
        ("distractor_salience=1.5", r"\[0, 1\]"),
        ("families=color:music", "unknown"),
        ("families=color:color", "twice"),
        ("families=color::shape", "names separated"),
        ("frames=5,families=count", "count family"),
        ("answer_format=word", "answer_format"),
        ("frames=6,target_frames=4:6,families=order", "order family"),
        ("target_frames=1,families=motion", "motion family"),
        ("seed_offset=-1", "seed_offset"),
    ],
)
def test_bad_overrides_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig().with_overrides(parse_world_overrides(text))


def test_family_constraints_only_apply_when_enabled():
    assert WorldConfig().with_overrides("frames=5,families=color:shape").frames == 5


def test_to_dict_round_trip_and_hashable():
    cfg = WorldConfig().with_overrides("target_size=10:14,families=count:order")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["target_size"] == [10, 14]
    assert WorldConfig.from_dict(data) == cfg
    assert hash(WorldConfig.from_dict(data)) == hash(cfg)
    with pytest.raises(ValueError, match="unknown world config keys"):
        WorldConfig.from_dict({**data, "speed": 3})


@pytest.mark.parametrize(
    "text",
    [
        "frames=8",
        "frame_size=64,token_grid=4,target_size=8:12",
        "num_distractors=0,num_salient=0",
        "distractor_salience=0",
        "frames=32,target_frames=1:8",
        "frame_size=224,token_grid=14,target_size=20:30",
    ],
)
def test_overridden_worlds_generate_consistent_items(text):
    cfg = WorldConfig().with_overrides(text)
    world = SyntheticWorld(cfg)
    g = cfg.token_grid
    for index in range(len(cfg.families)):
        item = world.item("val", index)
        assert item.frames.shape == (cfg.frames, cfg.frame_size, cfg.frame_size, 3)
        assert item.evidence.shape == (cfg.frames, g, g) and item.evidence.any()
        assert item.meta["token_color"].shape == (cfg.frames, g, g)
