"""Encoding without the vision tower: another question over features already computed, and blind
prompts for the blind test. Both promise the prompts of a full encoding, bit for bit, wherever they
are used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cacovid.scoring import accuracy_reward
from cacovid.train.validation import blind_answers_correct
from cacovid.types import QAItem

OTHER_QUESTION = "which shape moves ? A . ball B . box answer with the letter ."


class _TowerCalls:
    """Counts the adapter's vision-tower calls (its `_video_features`)."""

    def __init__(self, llm, monkeypatch) -> None:
        self.n = 0
        original = llm._video_features

        def counted(*args, **kwargs):
            self.n += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(llm, "_video_features", counted)


def test_reused_features_give_the_full_encoding_bit_for_bit(video_llm, tiny_frames, tiny_question):
    first = video_llm.encode(tiny_frames, tiny_question)
    full = video_llm.encode(tiny_frames, OTHER_QUESTION)
    reused = video_llm.encode(tiny_frames, OTHER_QUESTION, features=video_llm.placeholder_features(first))
    assert torch.equal(reused.inputs_embeds, full.inputs_embeds)
    assert torch.equal(reused.position_ids, full.position_ids)
    assert torch.equal(reused.video_positions, full.video_positions)
    assert not reused.meta.get("blind")


def test_reused_features_skip_the_vision_tower(video_llm, tiny_frames, tiny_question, monkeypatch):
    first = video_llm.encode(tiny_frames, tiny_question)
    features = video_llm.placeholder_features(first)
    calls = _TowerCalls(video_llm, monkeypatch)
    video_llm.encode(tiny_frames, OTHER_QUESTION, features=features)
    video_llm.encode(tiny_frames, OTHER_QUESTION, blind=True)
    assert calls.n == 0
    video_llm.encode(tiny_frames, OTHER_QUESTION)
    assert calls.n == 1


def test_blind_prompt_answers_like_the_full_one_with_every_video_token_dropped(
    video_llm, tiny_frames, tiny_question
):
    full = video_llm.encode(tiny_frames, tiny_question)
    blind = video_llm.encode(tiny_frames, tiny_question, blind=True)
    assert blind.meta["blind"] is True
    none = torch.zeros(full.num_video_tokens, dtype=torch.bool)
    a, b = video_llm.pack([(full, none)]), video_llm.pack([(blind, none)])
    assert torch.equal(a.inputs_embeds, b.inputs_embeds)  # separators included (LLaVA's newline)
    assert torch.equal(a.position_ids, b.position_ids)
    answers = ["A", "B"]
    assert torch.equal(
        video_llm.answer_logprobs_rows([(full, none)], answers),
        video_llm.answer_logprobs_rows([(blind, none)], answers),
    )


def test_blind_prompt_refuses_kept_video_tokens_and_reuse(video_llm, tiny_frames, tiny_question):
    blind = video_llm.encode(tiny_frames, tiny_question, blind=True)
    one = torch.zeros(blind.num_video_tokens, dtype=torch.bool)
    one[3] = True
    with pytest.raises(ValueError, match="blind prompt"):
        video_llm.answer_logprobs_rows([(blind, one)], ["A"])
    with pytest.raises(ValueError, match="blind prompt"):
        video_llm.placeholder_features(blind)


def test_feature_options_are_validated(video_llm, tiny_frames, tiny_question):
    first = video_llm.encode(tiny_frames, tiny_question)
    features = video_llm.placeholder_features(first)
    with pytest.raises(ValueError, match="vision_attention"):
        video_llm.encode(tiny_frames, tiny_question, features=features, vision_attention=True)
    with pytest.raises(ValueError, match="vision_attention"):
        video_llm.encode(tiny_frames, tiny_question, blind=True, vision_attention=True)
    with pytest.raises(ValueError, match="not both"):
        video_llm.encode(tiny_frames, tiny_question, features=features, blind=True)
    with pytest.raises(ValueError, match="same video"):
        video_llm.encode(tiny_frames[:2], tiny_question, features=features)  # fewer frames, fewer tokens
    with pytest.raises(ValueError, match="same video"):
        video_llm.encode(tiny_frames, tiny_question, features=features[:, :-1])


def test_blind_test_answers_as_with_the_vision_tower(video_llm, monkeypatch):
    rng = np.random.default_rng(5)
    items = [
        QAItem(
            id=f"b{i}",
            problem="what color ?",
            options=["red", "blue", "green"],
            solution="ABC"[i % 3],
            frames=rng.integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8),
        )
        for i in range(6)
    ]
    full = []
    for it in items:
        p = video_llm.encode_item(it)
        text = video_llm.generate_rows([(p, torch.zeros(p.num_video_tokens, dtype=torch.bool))])[0]
        full.append(accuracy_reward(text, it) >= 1.0)
    calls = _TowerCalls(video_llm, monkeypatch)
    assert blind_answers_correct(video_llm, items, batch_size=4) == full
    assert calls.n == 0
