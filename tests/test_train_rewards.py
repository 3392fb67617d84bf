"""Reward functions: option letters, numbers, ROUGE-L, and the dense log-likelihood reward."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cacovid.scoring import (
    accuracy_reward,
    multiple_choice_reward,
    numeric_reward,
    parse_number,
    parse_option_letter,
    regression_reward,
    rouge_l_f,
)
from cacovid.train.rewards import REWARDS, dense_reward, rollout_reward, text_rollout_reward
from cacovid.types import QAItem

OPTS = ["red", "green", "blue", "yellow"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(C)", "C"),
        ("c", "C"),
        ("D . yellow", "D"),
        ("The answer is A.", "A"),
        ("answer: (B) green", "B"),
        ("<think>maybe A or B</think><answer>C</answer>", "C"),
        ("I think it is option D", "D"),
        ("it looks green to me", "B"),
        ("A red ball", "A"),  # a leading capital letter commits to an option
        ("the answer is a red ball", "A"),  # …but here only the option text decides
        ("", None),
        ("no idea", None),
        ("E", None),  # not one of four options
        ("red or blue", None),  # two options named: undecided
    ],
)
def test_parse_option_letter(text, want):
    assert parse_option_letter(text, OPTS) == want


def test_option_text_ending_in_a_full_stop_is_found():
    options = ["Opened the door.", "Closed the window.", "Sat down.", "."]
    assert parse_option_letter("he opened the door.", options) == "A"
    assert parse_option_letter("Closed the window", options) == "B"
    assert parse_option_letter("nothing of the sort", options) is None  # the bare "." matches nothing


def test_multiple_choice_reward():
    item = QAItem(id="x", problem="what color ?", options=OPTS, solution="B")
    assert multiple_choice_reward("B", item) == 1.0
    assert multiple_choice_reward("(b)", item) == 1.0
    assert multiple_choice_reward("A", item) == 0.0
    assert multiple_choice_reward("garbage", item) == 0.0
    assert accuracy_reward("green", item) == 1.0


def test_numbers():
    assert parse_number("about 1,024 frames") == 1024.0
    assert parse_number("-3.5") == -3.5
    assert parse_number("<answer>2e3</answer>") == 2000.0
    assert parse_number("none") is None
    item = QAItem(id="n", problem="how many ?", options=[], solution="3", problem_type="numerical")
    assert numeric_reward("3", item) == 1.0
    assert numeric_reward("3.0 objects", item) == 1.0
    assert numeric_reward("4", item) == 0.0
    assert accuracy_reward("there are 3", item) == 1.0
    reg = QAItem(id="r", problem="how far ?", options=[], solution="10", problem_type="regression")
    assert regression_reward("8", reg) == pytest.approx(0.8)
    assert regression_reward("30", reg) == 0.0


def test_rouge_l():
    assert rouge_l_f("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l_f("", "") == 1.0
    assert rouge_l_f("dog", "cat") == 0.0
    # LCS("a b c d", "a c d e") = 3 → P = R = 3/4
    assert rouge_l_f("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l_f("A, B!", "a b") == 1.0
    item = QAItem(
        id="f", problem="describe", options=[], solution="a red ball rolls left", problem_type="free-form"
    )
    assert 0 < accuracy_reward("a ball rolls", item) < 1


def test_text_rollout_reward_makes_one_batched_call(llava_llm):
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)
    item = QAItem(
        id="t", problem="what color is the square ?", options=["red", "blue"], solution="A", frames=frames
    )
    p = llava_llm.encode_item(item)
    masks = torch.zeros(3, p.num_video_tokens, dtype=torch.bool)
    masks[:, :10] = True
    rows = [(p, m, None) for m in masks]
    calls = []
    real = llava_llm.generate_rows

    def counting(rows_, **kw):
        calls.append(len(rows_))
        return real(rows_, **kw)

    llava_llm.generate_rows = counting
    try:
        r = text_rollout_reward(multiple_choice_reward)(llava_llm, rows, item)
    finally:
        del llava_llm.generate_rows
    assert calls == [3]
    assert r.shape == (3,) and r.dtype == torch.float32
    texts = real(rows)
    assert r.tolist() == [multiple_choice_reward(t, item) for t in texts]


def test_dense_reward_is_the_correct_options_probability(video_llm):
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)
    item = QAItem(
        id="d", problem="what color ?", options=["red", "blue", "green"], solution="B", frames=frames
    )
    p = video_llm.encode_item(item)
    masks = torch.zeros(2, p.num_video_tokens, dtype=torch.bool)
    masks[0, :5] = True
    masks[1, -5:] = True
    rows = [(p, m, None) for m in masks]
    r = dense_reward(video_llm, rows, item)
    lp = video_llm.answer_logprobs_rows(rows, ["A", "B", "C"])
    want = torch.softmax(lp, -1)[:, 1]
    assert torch.allclose(r, want, atol=1e-6)
    assert bool(((r > 0) & (r < 1)).all())
    # swapping the correct letter changes the reward accordingly: the three sum to 1
    total = sum(
        dense_reward(
            video_llm, rows, QAItem(id="d", problem="?", options=item.options, solution=s, frames=frames)
        )
        for s in "ABC"
    )
    assert torch.allclose(total, torch.ones(2), atol=1e-5)
    num = QAItem(
        id="n", problem="how many ?", options=[], solution="3", problem_type="numerical", frames=frames
    )
    rn = dense_reward(video_llm, rows, num)
    assert bool(((rn > 0) & (rn <= 1)).all())


def test_reward_registry():
    assert set(REWARDS) >= {"dense", "logodds", "accuracy", "mc", "numeric", "rouge", "regression"}
    assert REWARDS["dense"].fn is dense_reward
    assert callable(rollout_reward("accuracy"))
    with pytest.raises(ValueError, match="unknown reward"):
        rollout_reward("bleu")


def test_logodds_reward_is_the_correct_options_log_odds(video_llm):
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)
    item = QAItem(
        id="l", problem="what color ?", options=["red", "blue", "green"], solution="C", frames=frames
    )
    p = video_llm.encode_item(item)
    masks = torch.zeros(3, p.num_video_tokens, dtype=torch.bool)
    masks[0, :5], masks[1, -5:], masks[2, 3:9] = True, True, True
    rows = [(p, m, None) for m in masks]
    r = REWARDS["logodds"].fn(video_llm, rows, item)
    lp = video_llm.answer_logprobs_rows(rows, ["A", "B", "C"]).double()
    want = lp[:, 2] - torch.logsumexp(lp[:, :2], dim=1)
    assert torch.allclose(r.double(), want, atol=1e-5)
    # σ(log-odds) is the dense reward's p(correct): the table's success map reads it as such
    assert torch.allclose(REWARDS["logodds"].success(r), dense_reward(video_llm, rows, item), atol=1e-5)
    assert float(rollout_reward("logodds")(video_llm, rows, item)[0]) == pytest.approx(float(r[0]))
    with pytest.raises(ValueError, match="multiple-choice"):
        REWARDS["logodds"].fn(
            video_llm,
            rows,
            QAItem(id="n", problem="?", options=[], solution="3", problem_type="numerical", frames=frames),
        )


def test_logodds_contrast_charges_for_what_answers_the_other_question(video_llm):
    frames = np.random.default_rng(2).integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)
    other = QAItem(
        id="o", problem="which shape ?", options=["ball", "box", "cone", "star"], solution="B", frames=frames
    )
    item = QAItem(
        id="c",
        problem="what color ?",
        options=["red", "blue", "green"],
        solution="C",
        frames=frames,
        counterfactual=other,
    )
    p = video_llm.encode_item(item)
    masks = torch.zeros(3, p.num_video_tokens, dtype=torch.bool)
    masks[0, :5], masks[1, -5:], masks[2, 3:9] = True, True, True
    rows = [(p, m, None) for m in masks]
    own = REWARDS["logodds"].fn(video_llm, rows, item)
    q = video_llm.encode_item(other)
    lift = REWARDS["logodds"].fn(video_llm, [(q, m, None) for m in masks], other)
    got = REWARDS["logodds_contrast"].fn(video_llm, rows, item)
    # the item's own log-odds, minus the other question's log-odds above chance (log 1/3, four options)
    assert torch.allclose(got.double(), (own - lift).double() + np.log(1 / 3), atol=1e-5)
    assert not torch.allclose(got, own, atol=1e-3)  # the other question did count
    alone = dataclasses.replace(item, counterfactual=None)
    assert torch.allclose(REWARDS["logodds_contrast"].fn(video_llm, rows, alone), own, atol=1e-6)
    short = dataclasses.replace(item, counterfactual=dataclasses.replace(other, frames=frames[:2]))
    with pytest.raises(ValueError, match="same video"):
        REWARDS["logodds_contrast"].fn(video_llm, rows, short)


def test_logodds_contrast_reuses_the_video_features_only_for_the_same_video(video_llm, monkeypatch):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)
    other = QAItem(
        id="o", problem="which shape ?", options=["ball", "box"], solution="A", frames=frames.copy()
    )
    item = QAItem(
        id="c",
        problem="what color ?",
        options=["red", "blue"],
        solution="B",
        frames=frames,
        counterfactual=other,
    )
    p = video_llm.encode_item(item)
    masks = torch.zeros(2, p.num_video_tokens, dtype=torch.bool)
    masks[0, :7], masks[1, 5:20] = True, True
    rows = [(p, m, None) for m in masks]
    expected = REWARDS["logodds_contrast"].fn(video_llm, rows, item)
    calls = []
    tower = video_llm._video_features
    monkeypatch.setattr(video_llm, "_video_features", lambda *a, **k: calls.append(1) or tower(*a, **k))
    assert torch.equal(REWARDS["logodds_contrast"].fn(video_llm, rows, item), expected)
    assert calls == []  # equal frames (another array): the item's features were reused
    elsewhere = dataclasses.replace(other, frames=rng.integers(0, 256, size=frames.shape, dtype=np.uint8))
    moved = dataclasses.replace(item, counterfactual=elsewhere)
    got = REWARDS["logodds_contrast"].fn(video_llm, rows, moved)
    assert calls == [1]  # another video: encoded in full
    q = video_llm.encode_item(elsewhere)
    lift = REWARDS["logodds"].fn(video_llm, [(q, m, None) for m in masks], elsewhere)
    own = REWARDS["logodds"].fn(video_llm, rows, item)
    assert torch.allclose(got, own - lift, atol=1e-5)  # chance log-odds of two options is 0
