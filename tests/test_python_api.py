"""The public Python API for a pipeline of one's own (docs/python-api.md): processor outputs + a
selector → pruned `inputs_embeds` / `position_ids` / `attention_mask` for the model's own `generate`.

The user path must answer exactly as the library's own path (encode, select, `generate_ids_rows`)
does with the same selector, on every supported family (M-RoPE ids for Qwen2-VL / Qwen2.5-VL)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import greedy_margin

import cacovid
from cacovid import CaCoVIDSelector, PrunedInputs, get_selector, load_model, prune_inputs
from cacovid.models.loading import as_video_llm, check_model_location
from cacovid.policy import CaCoVIDPolicy
from cacovid.testing.tiny import tiny_llava_onevision

RATIO = 0.25
NEW_TOKENS = 5


def _processor_outputs(llm, frames, question):
    return llm.processor(text=llm.chat_text(question), videos=[frames], return_tensors="pt")


@pytest.fixture(scope="module")
def policy_dirs(tmp_path_factory):
    """One saved (fresh, seeded) policy per family, built on demand."""
    made: dict[str, object] = {}

    def get(llm):
        if llm.family not in made:
            d = tmp_path_factory.mktemp(f"policy-{llm.family}")
            CaCoVIDPolicy.from_host(llm, seed=0, novelty_weight=4.0).save_pretrained(d)
            made[llm.family] = d
        return made[llm.family]

    return get


@pytest.mark.float_paths
@pytest.mark.parametrize("method", ["cacovid", "uniform", "divprune"])
def test_user_generate_matches_the_adapter_path(video_llm, tiny_frames, tiny_question, policy_dirs, method):
    if method == "cacovid":
        # A plain transformers model as the host: the selector wraps it without freezing it anew.
        selector = CaCoVIDSelector.from_pretrained(policy_dirs(video_llm), host=video_llm.model)
    else:
        selector = get_selector(method)
    inputs = _processor_outputs(video_llm, tiny_frames, tiny_question)
    pruned = prune_inputs(video_llm.model, inputs, selector, RATIO, processor=video_llm.processor)
    user = video_llm.model.generate(
        **pruned, max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    # The two paths' logits agree to rounding, not bit for bit (different kernels and caches): equal
    # tokens are promised where every greedy choice leads its runner-up by more than that.
    assert greedy_margin(torch.stack(user.scores)) > 1e-5

    prompt = video_llm.encode(tiny_frames, tiny_question)
    sel = selector.select(prompt, RATIO, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sel.keep.cpu(), pruned.selection.keep.cpu())
    ours = video_llm.generate_ids_rows([(prompt, sel.keep, sel.embeds)], max_new_tokens=NEW_TOKENS)
    assert user.sequences.tolist() == ours.tolist()
    assert pruned.num_kept == int(RATIO * prompt.num_video_tokens)


def test_pruned_inputs_layout(video_llm, tiny_frames, tiny_question):
    inputs = _processor_outputs(video_llm, tiny_frames, tiny_question)
    pruned = prune_inputs(video_llm, inputs, get_selector("uniform"), RATIO)
    assert isinstance(pruned, PrunedInputs)
    assert sorted(pruned) == ["attention_mask", "inputs_embeds", "position_ids"]
    n = pruned.prompt.num_video_tokens
    S = inputs["input_ids"].shape[1] - n + int(RATIO * n)
    assert pruned.inputs_embeds.shape == (1, S, video_llm.hidden_size)
    assert torch.equal(pruned.attention_mask, torch.ones(1, S, dtype=torch.long))
    if video_llm.family == "llava_onevision":
        assert pruned.position_ids.shape == (1, S)  # 2-D: a 3-D tensor is silently misread
    else:
        assert pruned.position_ids.shape == (3, 1, S)  # M-RoPE (t, h, w) ids
    # Kept tokens keep their original positions: the full prompt's ids at the kept places.
    full = torch.ones(pruned.prompt.inputs_embeds.shape[0], dtype=torch.bool)
    full[pruned.prompt.video_positions] = pruned.selection.keep
    assert torch.equal(pruned.position_ids[..., 0, :], pruned.prompt.position_ids[..., full])


def test_plain_models_are_used_as_they_are():
    model, processor = tiny_llava_onevision(["red"], seed=0, text_hidden=64, text_layers=1, vision_layers=1)
    model.train()
    adapter = as_video_llm(model, processor)
    assert adapter.model is model and model.training
    assert all(p.requires_grad for p in model.parameters())
    assert as_video_llm(adapter) is adapter


def test_bad_inputs_are_named(llava_llm, qwen2_vl_llm, tiny_frames, tiny_question):
    selector = get_selector("uniform")
    inputs = _processor_outputs(llava_llm, tiny_frames, tiny_question)
    two = dict(inputs, input_ids=inputs["input_ids"].repeat(2, 1))
    with pytest.raises(ValueError, match="batch size 1"):
        prune_inputs(llava_llm, two, selector, RATIO)
    with pytest.raises(ValueError, match="no 'pixel_values_videos'"):
        prune_inputs(llava_llm, {"input_ids": inputs["input_ids"]}, selector, RATIO)
    with pytest.raises(ValueError, match="image inputs"):
        prune_inputs(llava_llm, dict(inputs, pixel_values=torch.zeros(1)), selector, RATIO)
    with pytest.raises(ValueError, match="got Linear"):
        prune_inputs(torch.nn.Linear(2, 2), inputs, selector, RATIO)
    with pytest.raises(ValueError, match="must be loaded as LlavaOnevisionForConditionalGeneration"):
        prune_inputs(llava_llm.model.model, inputs, selector, RATIO)  # the base model, no LM head
    q_inputs = _processor_outputs(qwen2_vl_llm, tiny_frames, tiny_question)
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        prune_inputs(qwen2_vl_llm, dict(q_inputs, mm_token_type_ids=None), selector, RATIO)


def test_selector_from_pretrained_reads_the_saved_selection(llava_llm, policy_dirs):
    d = policy_dirs(llava_llm)
    assert (CaCoVIDSelector.from_pretrained(d).alpha, CaCoVIDSelector.from_pretrained(d).fill) == (
        0.5,
        "even",
    )
    (d / "selection.json").write_text(json.dumps({"alpha": 0.0, "fill": "score", "note": "test"}))
    try:
        sel = CaCoVIDSelector.from_pretrained(d, host=llava_llm)
        assert (sel.alpha, sel.fill, sel.cap) == (0.0, "score", None)
        assert CaCoVIDSelector.from_pretrained(d, alpha=1.0).alpha == 1.0  # an override wins
        (d / "selection.json").write_text(json.dumps({"alhpa": 0.0}))
        with pytest.raises(ValueError, match="selection.json: unknown selection options"):
            CaCoVIDSelector.from_pretrained(d)
        (d / "selection.json").write_text("{not json")
        with pytest.raises(ValueError, match="selection.json: not valid JSON"):
            CaCoVIDSelector.from_pretrained(d)
    finally:
        (d / "selection.json").unlink()


def test_selector_from_pretrained_refuses_another_host(qwen2_vl_llm, llava_llm, policy_dirs):
    with pytest.raises(ValueError, match="trained for a 'llava_onevision' host"):
        CaCoVIDSelector.from_pretrained(policy_dirs(llava_llm), host=qwen2_vl_llm.model)


def test_top_level_names():
    assert load_model is cacovid.load_video_llm
    assert {"CaCoVIDSelector", "load_model", "prune_inputs", "get_selector"} <= set(dir(cacovid))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cacovid.nothing  # noqa: B018


@pytest.mark.parametrize("name", ["/missing/path", "./missing", "runs/a/b", "~/missing-model"])
def test_a_missing_model_path_is_a_clear_error(name):
    with pytest.raises(FileNotFoundError, match="no such folder, and not a hub id"):
        load_model(name)


def test_hub_ids_and_bad_folders(tmp_path):
    check_model_location("llava-hf/llava-onevision-qwen2-7b-ov-hf")  # left to transformers
    check_model_location("Qwen/Qwen2.5-VL-7B-Instruct")
    with pytest.raises(ValueError, match="holds no config.json"):
        check_model_location(str(tmp_path))
    (tmp_path / "f.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        check_model_location(str(tmp_path / "f.bin"))


def test_train_command_names_a_missing_model(tmp_path):
    from typer.testing import CliRunner

    from cacovid.cli import app

    res = CliRunner().invoke(
        app, ["train", "--model", "/missing/path", "--out", str(tmp_path / "run"), "--n-items", "2"]
    )
    assert res.exit_code == 2, res.output  # a usage error naming the option, not a traceback
    shown = " ".join(res.output.replace("│", " ").split())  # the error box wraps lines
    assert "Invalid value for --model" in shown
    assert "'/missing/path': no such folder, and not a hub id" in shown
    assert not (tmp_path / "run" / "checkpoint").exists()
