"""load_video_llm: adapter chosen from the config, exact save/load round trip, clear errors."""

from __future__ import annotations

import pytest
import torch

import cacovid.models.loading as loading
from cacovid.models import (
    LlavaOneVisionVideoLLM,
    Qwen2_5_VLVideoLLM,
    Qwen2VLVideoLLM,
    adapter_for,
    load_video_llm,
)

EXPECTED = {
    "llava_onevision": LlavaOneVisionVideoLLM,
    "qwen2_vl": Qwen2VLVideoLLM,
    "qwen2_5_vl": Qwen2_5_VLVideoLLM,
}


def test_round_trip_picks_adapter_and_reproduces_outputs(video_llm, tiny_frames, tiny_question, tmp_path):
    video_llm.model.save_pretrained(tmp_path)
    video_llm.processor.save_pretrained(tmp_path)
    loaded = load_video_llm(str(tmp_path))
    assert type(loaded) is EXPECTED[video_llm.family]
    assert loaded.name_or_path == str(tmp_path)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    a = video_llm.encode(tiny_frames, tiny_question)
    b = loaded.encode(tiny_frames, tiny_question)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.position_ids, b.position_ids)
    assert torch.allclose(a.inputs_embeds, b.inputs_embeds, atol=1e-6)
    keep = torch.zeros(a.num_video_tokens, dtype=torch.bool)
    keep[::7] = True
    assert torch.allclose(video_llm.next_token_logits(a, keep), loaded.next_token_logits(b, keep), atol=1e-5)
    assert video_llm.generate(a, keep) == loaded.generate(b, keep)


def test_adapter_for_known_and_unknown_types():
    for name, cls in EXPECTED.items():
        assert adapter_for(name) is cls
    with pytest.raises(ValueError, match="llava_onevision, qwen2_5_vl, qwen2_vl"):
        adapter_for("llama")


def test_unknown_model_type_in_checkpoint(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="unsupported video LLM model_type 'qwen2'"):
        load_video_llm(str(tmp_path))


def test_toy_alias_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "toy_weights_dir", lambda: tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="toy model's weights are not installed"):
        load_video_llm("toy")


def test_toy_alias_resolves_to_package_folder(tmp_path, monkeypatch):
    default = loading.toy_weights_dir()
    assert default.parts[-3:] == ("cacovid", "toy", "weights")
    monkeypatch.setattr(loading, "toy_weights_dir", lambda: tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert loading.resolve_name("toy") == str(tmp_path)
    assert loading.resolve_name("some/other") == "some/other"


def test_bad_name():
    with pytest.raises(ValueError, match="non-empty"):
        load_video_llm("")
