"""World presets: `classic` is the original world item for item; `decoys` asks what only the question
can tell (many objects come and go, each in a colour of its own, and every colour stays in view)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from cacovid.data.synthetic import COLOR_NAMES, DIRECTIONS, SyntheticWorld, WorldConfig, world_stats
from cacovid.data.synthetic.config import PRESETS

N = 120


def _digest(item) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(item.frames).tobytes())
    h.update(np.ascontiguousarray(item.evidence).tobytes())
    fields = [item.problem, item.options, item.solution, item.family]
    h.update(json.dumps([*fields, item.meta["objects"], item.meta["target_frames"]]).encode())
    return h.hexdigest()[:16]


# Digests of items generated before presets existed (default config; and with every family).
CLASSIC = {
    "train:0": "9fb075df75b99032", "train:7": "a8d0eedf8d9f2d21", "train:100": "a480d80a5642766b",
    "val:1": "29a063f4e33e254d", "val:2": "9d3985d2bbd0ba80", "test:0": "29b0af775b707deb",
    "test:1": "b9194c0f46b19f00", "test:2": "7e3ab6251a435424", "test:100": "432f60c22fb5f50f",
}  # fmt: skip
CLASSIC_ALL_FAMILIES = {
    "train:1": "7dd8bb510e905285", "train:2": "a09abbb999cc3c91", "val:100": "85339345cf87ec5f",
    "test:1": "d949011e9913ce31", "test:2": "e4e66d7cb0d1cc3b", "test:100": "365452e09cfc4a0a",
}  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ("preset=classic", CLASSIC),
        ("", CLASSIC),
        ("preset=classic,families=color:shape:motion:order:count", CLASSIC_ALL_FAMILIES),
    ],
)
def test_classic_preset_reproduces_the_original_items_byte_for_byte(overrides, expected):
    world = SyntheticWorld(WorldConfig().with_overrides(overrides))
    for key, digest in expected.items():
        split, index = key.split(":")
        assert _digest(world.item(split, int(index))) == digest, key


@pytest.mark.parametrize(
    ("world", "expected"),
    [
        ("preset=classic", CLASSIC),
        ("preset=classic,families=color:shape:motion:order:count", CLASSIC_ALL_FAMILIES),
    ],
)
def test_the_command_line_reaches_the_classic_items_byte_for_byte(world, expected):
    """Every command's `--world` defaults to decoys; `preset=classic` still gives the original items."""
    from cacovid.data.sources import source_from_args

    for key, digest in expected.items():
        split, index = key.split(":")
        source = source_from_args("synthetic", split=split, world=world, n=1, start=int(index))
        assert _digest(source.sequence[0]) == digest, key


def test_preset_values_and_overrides():
    assert WorldConfig.preset("classic") == WorldConfig()
    decoys = WorldConfig().with_overrides("preset=decoys")
    assert decoys == WorldConfig(**PRESETS["decoys"])
    assert decoys.preset_name == "decoys" and WorldConfig().preset_name == "classic"
    shifted = WorldConfig().with_overrides("preset=decoys,seed_offset=5,frames=32")
    assert (shifted.seed_offset, shifted.frames, shifted.num_decoys) == (5, 32, decoys.num_decoys)
    assert shifted.preset_name is None
    # a preset starts from its own values, not from the config it is applied to
    assert WorldConfig(frames=8).with_overrides("preset=classic") == WorldConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preset=nope", "unknown world preset 'nope'"),
        ("preset=decoys,families=color", "cannot be asked with decoys"),
        ("preset=decoys,num_decoys=8", "num_decoys must be in [0, 7]"),
        ("num_decoys=3", "cannot be asked with decoys"),
    ],
)
def test_bad_presets_are_named(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        WorldConfig().with_overrides(text)


@pytest.fixture(scope="module")
def decoy_samples():
    world = SyntheticWorld(WorldConfig.preset("decoys"))
    return [world.sample("test", i) for i in range(N)]


def test_decoys_make_the_question_the_only_guide(decoy_samples):
    cfg = WorldConfig.preset("decoys")
    for s in decoy_samples:
        objects = s.scene.objects
        (target,) = [o for o in objects if o.role == "target"]
        decoys = [o for o in objects if o.role == "decoy"]
        staying = [o for o in objects if o.role in ("salient", "distractor")]
        assert len(decoys) == cfg.num_decoys
        # every object that comes and goes has a colour of its own: the named colour is unambiguous
        transient = [target.color, *(d.color for d in decoys)]
        assert len(set(transient)) == len(transient)
        # ... yet every colour is also shown by an object that stays in view (8 distractors)
        assert {o.color for o in staying} == set(COLOR_NAMES)
        # "the red square" is one object: no other object has both its colour and its shape
        pairs = Counter((o.shape, o.color) for o in objects)
        assert pairs[(target.shape, target.color)] == 1
        assert all(pairs[(d.shape, d.color)] == 1 for d in decoys)
        # decoys come and go like the target: fast axis-aligned motion, durations in range
        for o in [target, *decoys]:
            assert o.direction in DIRECTIONS
            assert cfg.target_frames[0] <= int(o.visible.sum()) <= cfg.target_frames[1]
            assert cfg.target_size[0] <= o.size <= cfg.target_size[1]
        assert s.item.problem == f"which way does the {target.color} {target.shape} move ?"


def test_decoys_are_far_above_the_budget_and_answers_are_balanced(decoy_samples):
    world = SyntheticWorld(WorldConfig.preset("decoys"))
    (stats,) = world_stats(world, "test", N).values()
    n_tokens = world.config.num_tokens
    # what comes and goes but does not answer: about 2x the 10 % budget, 4x the 5 % one
    assert stats.decoy_fraction * n_tokens > 1.6 * int(0.10 * n_tokens)
    assert stats.evidence_fraction * n_tokens < int(0.05 * n_tokens)  # the evidence fits at 5 %
    assert max(stats.letters.values()) / N < 0.36 and set(stats.answers) == set(DIRECTIONS)
    assert max(stats.answers.values()) / N < 0.36


def test_counterfactual_asks_about_a_decoy_of_the_same_video(decoy_samples):
    cfg = WorldConfig.preset("decoys")
    for s in decoy_samples[:40]:
        item, cf = s.item, s.item.counterfactual_item()
        decoy = s.scene.objects[cfg.num_distractors]  # the first decoy
        assert decoy.role == "decoy"
        assert cf.problem == f"which way does the {decoy.color} {decoy.shape} move ?"
        assert cf.options[" ABCD".index(cf.solution) - 1] == decoy.direction
        assert cf.frames is item.frames
        assert np.array_equal(cf.evidence, s.rendered.present[..., cfg.num_distractors])
        assert cf.evidence.any() and not (cf.evidence & item.evidence).all()


def test_items_without_a_counterfactual_say_so():
    item = SyntheticWorld().item("test", 0)
    assert item.counterfactual is None
    with pytest.raises(ValueError, match="has no counterfactual question"):
        item.counterfactual_item()
