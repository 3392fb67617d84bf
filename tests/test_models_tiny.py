"""Tiny model builders: tokenizer behaviour, processors keep the 7x7 cell layout, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from cacovid.testing.tiny import (
    build_word_tokenizer,
    chat_template,
    tiny_llava_onevision,
    tiny_qwen2_5_vl,
    tiny_qwen2_vl,
)

SPECIALS = ["<|im_start|>", "<|im_end|>", "<video>"]


def _tok():
    return build_word_tokenizer(["red", "Red", "is", "?", "."], SPECIALS, chat_template("<video>", "<image>"))


def test_word_tokenizer_ids_unknown_case_and_punctuation():
    tok = _tok()
    assert tok.convert_ids_to_tokens([0, 1]) == ["<unk>", "<pad>"]
    ids = tok("red Red is? zebra <video><video>", add_special_tokens=False)["input_ids"]
    toks = tok.convert_ids_to_tokens(ids)
    assert toks == ["red", "Red", "is", "?", "<unk>", "<video>", "<video>"]
    assert tok.convert_tokens_to_ids("red") != tok.convert_tokens_to_ids("Red")
    assert tok.padding_side == "left"
    assert tok.eos_token == "<|im_end|>"
    batch = tok(["red", "red is ."], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tok.pad_token_id
    assert batch["attention_mask"][0].tolist() == [0, 0, 1]


def test_word_tokenizer_rejects_bad_vocab():
    with pytest.raises(ValueError, match="eos"):
        build_word_tokenizer(["a"], ["<video>"], "", eos_token="<end>")
    with pytest.raises(ValueError, match="without spaces"):
        build_word_tokenizer(["two words"], SPECIALS, "")


def test_word_tokenizer_chat_template_and_round_trip(tmp_path):
    tok = _tok()
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "is red ?"}]}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>") and "<video>" in text and text.rstrip().endswith("assistant")
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    assert back("red Red ?")["input_ids"] == tok("red Red ?")["input_ids"]
    assert back.padding_side == "left"


def test_tiny_llava_processor_keeps_frames_on_the_grid():
    model, proc = tiny_llava_onevision(text_hidden=32, text_layers=1, vision_hidden=32, vision_layers=1)
    frames = np.random.default_rng(1).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    out = proc(text=text, videos=[frames], return_tensors="pt")
    # No resize or crop: pixels are the frames, normalised to [-1, 1].
    expected = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    assert out["pixel_values_videos"].shape == (1, 3, 3, 112, 112)
    assert torch.allclose(out["pixel_values_videos"][0], expected, atol=1e-5)
    n_video = int((out["input_ids"] == model.config.video_token_id).sum())
    assert n_video == 3 * 49 + 1  # 7x7 per frame + one image_newline


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl", "qwen2_5_vl"])
def test_bright_cell_moves_mostly_its_own_token(family, request):
    """Token (t, i, j) covers pixels [16i:16i+16, 16j:16j+16]: brightening one cell changes that
    token's features more than any other token's."""
    llm = request.getfixturevalue({"llava_onevision": "llava_llm"}.get(family, f"{family}_llm"))
    frames = np.full((2, 112, 112, 3), 40, dtype=np.uint8)
    base = llm.encode(frames, "what").video_features
    i, j = 3, 5
    bright = frames.copy()
    bright[:, 16 * i : 16 * i + 16, 16 * j : 16 * j + 16] = 250
    changed = llm.encode(bright, "what").video_features
    T, H, W = llm.encode(frames, "what").video_grid
    assert (H, W) == (7, 7)
    delta = (changed - base).norm(dim=-1).view(T, H, W)
    for t in range(T):
        assert delta[t].argmax().item() == i * W + j


def test_builders_are_seeded_and_validate_sizes():
    a, _ = tiny_qwen2_vl(text_hidden=32, text_layers=1, vision_hidden=32, vision_layers=1, seed=3)
    b, _ = tiny_qwen2_vl(text_hidden=32, text_layers=1, vision_hidden=32, vision_layers=1, seed=3)
    c, _ = tiny_qwen2_vl(text_hidden=32, text_layers=1, vision_hidden=32, vision_layers=1, seed=4)
    pa, pb, pc = (next(iter(m.parameters())) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    state = torch.random.get_rng_state()
    tiny_qwen2_5_vl(text_hidden=32, text_layers=1, vision_hidden=32, vision_layers=1)
    assert torch.equal(state, torch.random.get_rng_state())  # builders leave the global RNG alone
    with pytest.raises(ValueError, match="multiple of patch"):
        tiny_llava_onevision(frame_size=100, patch=8)
    with pytest.raises(ValueError, match="pooled"):
        tiny_llava_onevision(frame_size=104, patch=8)


def test_frame_size_and_patch_set_the_grid():
    model, proc = tiny_llava_onevision(
        frame_size=64, patch=8, text_hidden=32, text_layers=1, vision_hidden=32, vision_layers=1
    )
    from cacovid.models.llava_onevision import LlavaOneVisionVideoLLM

    llm = LlavaOneVisionVideoLLM(model, proc)
    frames = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    assert llm.encode(frames, "what").video_grid == (2, 4, 4)
