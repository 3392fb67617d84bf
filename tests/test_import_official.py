"""`cacovid import-official` on synthetic release checkpoints: a tiny LLaVA-OneVision checkpoint folder
with the release's `compression_policy.*` parameter names and shapes (one Qwen2 decoder layer, an
RMSNorm, token / frame heads D → D/2 → D/4 → D/8 → D/16 → 2, the mode head → 3), sharded as the
release is (index + shards) or in one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from conftest import TINY_SIZES, TINY_WORDS, assert_equal_up_to_rounding, differ_beyond_rounding
from safetensors.torch import save_file
from typer.testing import CliRunner

from cacovid.cli.import_official import import_official_command
from cacovid.policy import CaCoVIDPolicy, CaCoVIDSelector
from cacovid.policy.official import import_official
from cacovid.policy.release import release_select
from cacovid.testing.tiny import tiny_llava_onevision, tiny_qwen2_vl

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels

RENAMES = [
    ("layers.0.", "layer."),
    ("layernorm.", "norm."),
    ("token_compress.", "token_head."),
    ("frame_compress.", "frame_head."),
]


def release_policy_tensors(text_config, seed: int = 0) -> dict[str, torch.Tensor]:
    """The release's policy parameters for a host text config, in bf16 as released."""
    g = torch.Generator().manual_seed(seed)
    D, inter = text_config.hidden_size, text_config.intermediate_size
    heads, kv = text_config.num_attention_heads, text_config.num_key_value_heads
    hd = D // heads

    def r(*shape):
        return (torch.randn(*shape, generator=g) * 0.1).to(torch.bfloat16)

    t = {
        "layers.0.self_attn.q_proj.weight": r(heads * hd, D),
        "layers.0.self_attn.q_proj.bias": r(heads * hd),
        "layers.0.self_attn.k_proj.weight": r(kv * hd, D),
        "layers.0.self_attn.k_proj.bias": r(kv * hd),
        "layers.0.self_attn.v_proj.weight": r(kv * hd, D),
        "layers.0.self_attn.v_proj.bias": r(kv * hd),
        "layers.0.self_attn.o_proj.weight": r(D, heads * hd),
        "layers.0.mlp.gate_proj.weight": r(inter, D),
        "layers.0.mlp.up_proj.weight": r(inter, D),
        "layers.0.mlp.down_proj.weight": r(D, inter),
        "layers.0.input_layernorm.weight": 1 + r(D),
        "layers.0.post_attention_layernorm.weight": 1 + r(D),
        "layernorm.weight": 1 + r(D),
    }
    dims = [D, D // 2, D // 4, D // 8, D // 16]
    for head, last in (("token_compress", 2), ("frame_compress", 2), ("mode_selection", 3)):
        for i, (a, b) in enumerate(zip(dims, [*dims[1:], last], strict=True)):
            t[f"{head}.{2 * i}.weight"] = r(b, a)
            t[f"{head}.{2 * i}.bias"] = r(b)
    return {f"compression_policy.{k}": v for k, v in t.items()}


def write_release(folder: Path, *, sharded: bool = True, edit=None, model_type: str | None = None) -> dict:
    """A release-style checkpoint folder built from the tiny test LLaVA-OneVision config."""
    model, _ = tiny_llava_onevision(TINY_WORDS, seed=0, **TINY_SIZES)
    model.config.save_pretrained(folder)
    if model_type is not None:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "model_type": model_type}))
    host = {k: v.contiguous() for k, v in list(model.state_dict().items())[:6]}  # a few host tensors
    policy = release_policy_tensors(model.config.text_config)
    if edit is not None:
        edit(policy)
    if sharded:
        save_file(host, str(folder / "model-00001-of-00002.safetensors"))
        save_file(policy, str(folder / "model-00002-of-00002.safetensors"))
        weight_map = {k: "model-00001-of-00002.safetensors" for k in host}
        weight_map |= {k: "model-00002-of-00002.safetensors" for k in policy}
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map})
        )
    else:
        save_file(host | policy, str(folder / "model.safetensors"))
    return policy


@pytest.mark.parametrize("sharded", [True, False])
def test_import_maps_every_parameter(tmp_path, sharded):
    released = write_release(tmp_path, sharded=sharded)
    policy, report = import_official(tmp_path)
    state = policy.state_dict()
    for name, value in released.items():
        short = name.removeprefix("compression_policy.")
        if short.startswith("mode_selection."):
            continue
        old, new = next((o, n) for o, n in RENAMES if short.startswith(o))
        ours = new + short[len(old) :]
        assert torch.equal(state[ours], value.float()), name
    assert report["imported"] == len(state) == len(released) - 10
    assert all(n.startswith("compression_policy.mode_selection.") for n in report["not_imported"])
    assert policy.config.head_widths == (32, 16, 8, 4)
    assert (policy.config.layer_attention, policy.config.selection_rule) == ("causal", "release")


def test_cli_writes_a_policy_that_selects_like_the_release(tmp_path, llava_llm, tiny_frames, tiny_question):
    write_release(tmp_path / "release", sharded=True)
    app = typer.Typer()
    app.command()(import_official_command)
    res = CliRunner().invoke(app, [str(tmp_path / "release"), "--out", str(tmp_path / "policy")])
    assert res.exit_code == 0, res.output
    assert "not imported: compression_policy.mode_selection" in res.output
    saved = json.loads((tmp_path / "policy" / "selection.json").read_text())
    assert (saved["alpha"], saved["fill"]) == (0.5, "even")
    assert json.loads((tmp_path / "policy" / "import.json").read_text())["imported"] == 33

    # The saved policy loads onto the matching host and selects with the release's rule.
    selector = CaCoVIDSelector.from_pretrained(tmp_path / "policy", host=llava_llm)
    prompt = llava_llm.encode(tiny_frames, tiny_question)
    keep = selector.select(prompt, 0.1).keep
    out = selector.policy(prompt)
    assert torch.equal(keep.cpu(), release_select(out.token_scores, out.frame_scores, 0.1, prompt.video_grid))
    # ... and runs its layer causally: the question after the video does not move the video's scores.
    # Equal in exact arithmetic only: the longer prompt runs through differently blocked kernels.
    other = llava_llm.encode(tiny_frames, "which shape moves left ? A . circle B . square")
    with torch.no_grad():
        assert_equal_up_to_rounding(selector.policy(other).token_logits, out.token_logits.detach())
    loaded = CaCoVIDPolicy.from_pretrained(tmp_path / "policy")
    assert loaded.config.layer_attention == "causal"

    again = CliRunner().invoke(app, [str(tmp_path / "release"), "--out", str(tmp_path / "policy")])
    assert again.exit_code != 0 and "--force" in again.output
    ok = CliRunner().invoke(
        app,
        [str(tmp_path / "release"), "--out", str(tmp_path / "p2"), "--layer-attention", "bidirectional"],
    )
    assert ok.exit_code == 0, ok.output
    both = CaCoVIDPolicy.from_pretrained(tmp_path / "p2")
    assert both.config.layer_attention == "bidirectional"
    with torch.no_grad():  # the same weights reading the question: a change the tolerance above would see
        assert differ_beyond_rounding(both(other).token_logits, both(prompt).token_logits)


def test_a_folder_without_policy_weights(tmp_path):
    model, _ = tiny_llava_onevision(TINY_WORDS, seed=0, **TINY_SIZES)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds no compression_policy\.\* parameters \(model.safetensors\)"):
        import_official(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        import_official(tmp_path / "missing")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.__setitem__("compression_policy.token_compress.2.weight", torch.zeros(8, 32)),
            r"compression_policy.token_compress.2.weight has shape \(8, 32\), expected \(16, 32\)",
        ),
        (
            lambda t: t.pop("compression_policy.frame_compress.8.bias"),
            r"lacks \['compression_policy.frame_compress.8.bias'\]",
        ),
        (
            lambda t: t.__setitem__("compression_policy.layers.1.mlp.up_proj.weight", torch.zeros(2)),
            "one decoder layer",
        ),
        (
            lambda t: t.__setitem__("compression_policy.extra_head.0.weight", torch.zeros(2)),
            "unexpected parameter compression_policy.extra_head.0.weight",
        ),
    ],
)
def test_unexpected_shapes_and_names(tmp_path, edit, message):
    write_release(tmp_path, edit=edit)
    with pytest.raises(ValueError, match=message):
        import_official(tmp_path)


def test_a_policy_for_another_host(tmp_path):
    write_release(tmp_path / "qwen", model_type="qwen2_5_vl")
    with pytest.raises(
        ValueError, match="a 'qwen2_5_vl' model; the release's policy is for a 'llava_onevision'"
    ):
        import_official(tmp_path / "qwen")
    write_release(tmp_path / "release")
    qwen, _ = tiny_qwen2_vl(TINY_WORDS, seed=0, **TINY_SIZES)
    qwen.config.save_pretrained(tmp_path / "qwen-host")
    with pytest.raises(ValueError, match="host .*qwen-host.* is a 'qwen2_vl' model"):
        import_official(tmp_path / "release", host=tmp_path / "qwen-host")
    bigger, _ = tiny_llava_onevision(TINY_WORDS, seed=0, **{**TINY_SIZES, "text_hidden": 128})
    bigger.config.save_pretrained(tmp_path / "bigger")
    with pytest.raises(
        ValueError, match="does not fit host .*bigger.*hidden_size: policy has 64, host has 128"
    ):
        import_official(tmp_path / "release", host=tmp_path / "bigger")
