"""The synthetic world: determinism, balance, sparsity, evidence that matches the pixels, no shortcuts."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from cacovid.data.synthetic import (
    COLOR_NAMES,
    COLORS,
    DIRECTIONS,
    FAMILIES,
    SHAPE_NAMES,
    VOCABULARY,
    SyntheticWorld,
    WorldConfig,
    evidence_fraction_by_family,
    world_stats,
)
from cacovid.data.synthetic.render import cell_counts, object_pixels
from cacovid.data.synthetic.scene import ORDINARY_BRIGHTNESS

N_SAMPLES = 150


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    # Every family, `shape` included (the default leaves it out for the embedded toy model).
    return SyntheticWorld(WorldConfig(families=FAMILIES))


@pytest.fixture(scope="module")
def samples(world):
    return [world.sample("test", i) for i in range(N_SAMPLES)]


# ---- determinism and splits ---------------------------------------------------------------------
def test_same_seed_same_item(world):
    a, b = world.item("test", 17), SyntheticWorld(WorldConfig(families=FAMILIES)).item("test", 17)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.evidence, b.evidence)
    assert (a.problem, a.options, a.solution, a.family, a.id) == (
        b.problem,
        b.options,
        b.solution,
        b.family,
        b.id,
    )
    assert a.id == "synthetic:test:17"


def test_item_does_not_depend_on_generation_history(world):
    direct = world.item("val", 9)
    via_iter = list(world.items("val", 3, start=7))[2]
    np.testing.assert_array_equal(direct.frames, via_iter.frames)
    assert direct.problem == via_iter.problem and direct.options == via_iter.options


def test_items_differ_across_indices_splits_and_offsets(world):
    base = world.item("test", 0)
    others = [
        world.item("test", 5),  # same family (round robin over 5), different item
        world.item("train", 0),
        world.item("val", 0),
        SyntheticWorld(WorldConfig(seed_offset=1)).item("test", 0),
    ]
    for other in others:
        assert not np.array_equal(base.frames, other.frames)
    seeds = {world.seed(split, 0) for split in ("train", "val", "test")}
    assert len(seeds) == 3


def test_split_and_index_validation(world):
    with pytest.raises(ValueError, match="unknown split"):
        world.item("dev", 0)
    with pytest.raises(ValueError, match="non-negative"):
        world.item("test", -1)
    with pytest.raises(ValueError, match="below"):
        world.item("test", 10**9)
    with pytest.raises(ValueError, match="unknown split"):
        world.items("dev", 3)


def test_families_round_robin(world):
    assert [world.item("train", i).family for i in range(10)] == list(FAMILIES) * 2
    only = SyntheticWorld(WorldConfig(families=("count",)))
    assert {only.item("train", i).family for i in range(4)} == {"count"}


# ---- item format ----------------------------------------------------------------------------------
def test_item_format(samples):
    for s in samples[:10]:
        item = s.item
        assert item.frames.shape == (16, 112, 112, 3) and item.frames.dtype == np.uint8
        assert item.evidence.shape == (16, 7, 7) and item.evidence.dtype == np.bool_
        assert item.problem_type == "multiple choice" and len(item.options) == 4
        assert len(set(item.options)) == 4 and item.solution in "ABCD"
        assert item.options["ABCD".index(item.solution)] == item.meta["answer"]
        for key in ("token_color", "token_shape"):
            assert item.meta[key].shape == (16, 7, 7) and item.meta[key].dtype == np.int8
        np.testing.assert_array_equal(item.meta["token_is_target"], item.evidence)


def test_questions_are_word_tokenisable_and_in_vocabulary(samples):
    vocab = set(VOCABULARY)
    assert {"A", "B", "C", "D", "?", "."} <= vocab
    assert set(COLOR_NAMES) | set(SHAPE_NAMES) | set(DIRECTIONS) <= vocab
    for s in samples:
        item = s.item
        assert item.problem.endswith(" ?") and item.problem == item.problem.lower()
        assert "  " not in item.problem
        words = item.prompt_text().split(" ") + [item.solution]
        assert set(words) <= vocab, set(words) - vocab
        assert all(" " not in o for o in item.options)


# ---- evidence -------------------------------------------------------------------------------------
def test_evidence_matches_the_rendered_target_pixels(world, samples):
    cfg = world.config
    for s in samples:
        targets = [(k, o) for k, o in enumerate(s.scene.objects) if o.is_target]
        expected = np.zeros_like(s.item.evidence)
        for k, target in targets:
            alone = object_pixels(target, cfg)
            # Targets are drawn on top: every pixel of the target alone is shown as the target ...
            np.testing.assert_array_equal(alone, s.rendered.object_map == k + 1)
            color = np.rint(np.array(COLORS[target.color]) * ORDINARY_BRIGHTNESS)
            assert np.all(s.item.frames[alone] == color)
            # ... and the cell rule, recomputed here: >= 10 % of the cell, or the frame's anchor cell.
            counts = cell_counts(alone, cfg.cell_size)
            rule = counts >= np.ceil(0.10 * cfg.cell_size**2)
            for t in np.flatnonzero(counts.sum(axis=(1, 2))):
                i, j = np.unravel_index(np.argmax(counts[t]), counts[t].shape)
                rule[t, i, j] = True
            expected |= rule
        np.testing.assert_array_equal(s.item.evidence, expected)


def test_every_visible_target_frame_has_evidence(samples):
    for s in samples:
        frames_with_target = set()
        for frames in s.item.meta["target_frames"]:
            frames_with_target.update(frames)
        assert set(np.flatnonzero(s.item.evidence.any(axis=(1, 2)))) == frames_with_target


def test_evidence_fraction_per_family_is_sparse(world):
    fractions = evidence_fraction_by_family(world, "val", 300)
    assert set(fractions) == set(FAMILIES)
    for family, fraction in fractions.items():
        assert 0.005 <= fraction <= 0.04, (family, fraction)


def test_dense_labels(samples):
    for s in samples:
        item, objects = s.item, s.scene.objects
        token_object = item.meta["token_object"]
        # Evidence cells are labelled with a target; label 0 only where no object is present.
        assert all(objects[k - 1].is_target for k in token_object[item.evidence])
        np.testing.assert_array_equal(token_object == 0, ~s.rendered.present.any(axis=-1))
        for k, obj in enumerate(objects, start=1):
            cells = token_object == k
            assert np.all(item.meta["token_color"][cells] == COLOR_NAMES.index(obj.color) + 1)
            assert np.all(item.meta["token_shape"][cells] == SHAPE_NAMES.index(obj.shape) + 1)
        assert np.all((item.meta["token_color"] == 0) == (token_object == 0))


# ---- question semantics ---------------------------------------------------------------------------
def test_question_attributes_are_unique_and_answers_true(samples):
    for s in samples:
        item = s.item
        targets = s.scene.targets
        distractors = [o for o in s.scene.objects if not o.is_target]
        answer = item.meta["answer"]
        if item.family == "color":
            (target,) = targets
            assert target.color == answer and f"the {target.shape} ?" in item.problem
            assert target.shape not in {d.shape for d in distractors}
        elif item.family == "shape":
            (target,) = targets
            assert target.shape == answer and target.color in item.problem
            assert target.color not in {d.color for d in distractors}
        elif item.family == "motion":
            (target,) = targets
            frames = np.flatnonzero(target.visible)
            assert len(frames) >= 2 and target.shape not in {d.shape for d in distractors}
            step = (target.positions[frames[-1]] - target.positions[frames[0]]) / (frames[-1] - frames[0])
            dy, dx = DIRECTIONS[answer]
            assert np.dot(step, (dy, dx)) >= 2.5  # several pixels per frame along the answer
            assert abs(np.dot(step, (dx, dy))) < 0.5  # and not sideways
            # Visible at token level: from first to last frame the target moves at least one cell.
            cell = item.frames.shape[1] // s.rendered.evidence.shape[1]
            travel = np.dot(target.positions[frames[-1]] - target.positions[frames[0]], (dy, dx))
            assert travel >= cell
            assert target.direction == answer and item.meta["objects"][-1]["direction"] == answer
        elif item.family == "order":
            first, second = targets
            assert np.flatnonzero(first.visible)[0] < np.flatnonzero(second.visible)[0]
            assert answer == first.color and second.color in item.options
            in_video = {o.color for o in s.scene.objects}
            absent = set(item.options) - {first.color, second.color}
            assert len(absent) == 2 and not absent & in_video
            assert first.color not in {d.color for d in distractors}
            assert second.color not in {d.color for d in distractors}
        elif item.family == "count":
            (target,) = targets
            assert int(answer) == int(target.visible.sum())
            values = sorted(int(o) for o in item.options)
            assert values == list(range(values[0], values[0] + 4))
            assert target.shape not in {d.shape for d in distractors}


def test_target_is_not_trivially_the_smallest(samples):
    smallest = similar = total = 0
    for s in samples:
        sizes = [o.size for o in s.scene.objects if not o.is_target]
        for target in s.scene.targets:
            total += 1
            smallest += all(target.size < z for z in sizes)
            similar += any(abs(target.size - z) <= 3 for z in sizes)
    assert smallest / total < 0.5
    assert similar / total > 0.6


def test_salient_distractors_are_large_and_outlined(samples):
    for s in samples[:30]:
        salient = [o for o in s.scene.objects if o.role == "salient"]
        assert len(salient) == 2
        for obj in salient:
            assert obj.outline > 0 and obj.size > 18


# ---- balance and blind guessing -------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_stats(world):
    return world_stats(world, "train", 1000)


def test_letters_are_balanced(big_stats):
    letters = sum((s.letters for s in big_stats.values()), Counter())
    total = sum(letters.values())
    assert total == 1000
    for letter in "ABCD":
        assert 0.21 <= letters[letter] / total <= 0.29, letters


def test_answer_values_are_balanced(big_stats):
    universes = {
        "color": COLOR_NAMES,
        "shape": SHAPE_NAMES,
        "motion": tuple(DIRECTIONS),
        "order": COLOR_NAMES,
        "count": tuple(str(c) for c in range(WorldConfig().count_range[0], WorldConfig().count_range[1] + 1)),
    }
    for family, stats in big_stats.items():
        universe = universes[family]
        assert set(stats.answers) == set(universe), family
        expected = stats.n / len(universe)
        for value in universe:
            assert 0.5 * expected <= stats.answers[value] <= 1.6 * expected, (family, stats.answers)


def test_blind_guessing_does_not_beat_chance(world):
    """Learn P(value is correct | value offered, family) on train; it must not help on test."""
    offered: dict[tuple[str, str], int] = defaultdict(int)
    correct: dict[tuple[str, str], int] = defaultdict(int)
    letter_counts: Counter = Counter()
    for item in world.items("train", 600):
        for option in item.options:
            offered[(item.family, option)] += 1
        correct[(item.family, item.meta["answer"])] += 1
        letter_counts[item.solution] += 1
    best_letter = letter_counts.most_common(1)[0][0]
    hits_value = hits_letter = n = 0
    for item in world.items("test", 600, start=N_SAMPLES):
        scores = [correct[(item.family, o)] / max(1, offered[(item.family, o)]) for o in item.options]
        hits_value += item.options[int(np.argmax(scores))] == item.meta["answer"]
        hits_letter += item.solution == best_letter
        n += 1
    # Chance is 0.25; the standard error on 600 items is about 0.018.
    assert hits_value / n < 0.31
    assert hits_letter / n < 0.31
